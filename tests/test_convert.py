"""The official layout: the full-size UNet's shapes, forward parity of every converted component, key
accounting both ways, and `mtldm convert` / the registry's convert-on-first-use end to end."""

import json
import math
import shutil
import tarfile

import pytest
import torch

from mtldm_cli import MultiTrackPipeline
from mtldm_cli import convert as C
from mtldm_cli.checkpoints import Makers, resolve_model
from mtldm_cli.errors import InputError, ModelError
from mtldm_cli.model import MultiTrackUNet, UNetConfig

from . import official as O
from .conftest import assert_one_line_error

FULL = dict(mc=192, mult=(1, 2, 3, 5), nrb=2, attn=(8, 4, 2))


@pytest.mark.parametrize("cond_dim,count", [(512, 696_492_484), (None, 686_513_860)])
def test_full_size_unet_has_the_official_names_shapes_and_count(cond_dim, count):
    official = O.unet_shapes(cond_dim=cond_dim, **FULL)
    with torch.device("meta"):
        ours = MultiTrackUNet(UNetConfig(cond_dim=cond_dim))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == official
    assert sum(p.numel() for p in ours.parameters()) == sum(math.prod(s) for s in official.values()) == count


@pytest.mark.parametrize("cond_dim", [24, None])
def test_unet_forward_equals_the_ldm_reference(cond_dim):
    sd = O.unet_state(cond_dim=cond_dim)
    cfg = C.unet_config_from_state(sd, latent_channels=8)
    assert (cfg.model_channels, cfg.channel_mult, cfg.num_res_blocks, cfg.attention_resolutions, cfg.cond_dim) == \
        (32, (1, 2), 1, (2,), cond_dim)
    unet = MultiTrackUNet(cfg).eval()
    unet.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 16, 8, generator=g), torch.tensor([5, 930])
    y = torch.randn(2, 24, generator=g) if cond_dim else None
    with torch.no_grad():
        ours, ref = unet(x, t, y), O.unet_reference(sd, x, t, y)
    assert ref.abs().mean() > 0.1
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_unet_attention_layout_matters():
    """Swapping q and k in one fused projection must change the output: the parity test can fail."""
    sd = O.unet_state()
    unet = MultiTrackUNet(C.unet_config_from_state(sd, latent_channels=8)).eval()
    unet.load_state_dict(sd)
    w = sd["input_blocks.3.1.qkv.weight"]
    swapped = dict(sd, **{"input_blocks.3.1.qkv.weight": torch.cat([w[32:64], w[:32], w[64:]])})
    x, t, y = torch.randn(1, 4, 8, 16, 8), torch.tensor([100]), torch.randn(1, 24)
    with torch.no_grad():
        assert not torch.allclose(unet(x, t, y), O.unet_reference(swapped, x, t, y), atol=1e-5)


def test_vae_mapping_matches_diffusers_and_is_one_to_one():
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = O.vae_state()
    ours = C.vae_to_diffusers(sd, n_up=2)
    blocks = {"down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2}
    ref = convert_ldm_vae_checkpoint(dict(sd), blocks)
    assert set(ours) == set(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    names = [C.vae_key_to_diffusers(k, 2) for k in sd]
    assert len(set(names)) == len(sd)  # one-to-one
    vae = C.vae_from_state(sd, scaling_factor=0.8)
    assert set(vae.state_dict()) == set(names) and vae.config.scaling_factor == 0.8


@pytest.mark.parametrize("folded", [False, True])
def test_vocoder_forward_equals_the_original_hifigan(folded):
    sd = O.hifigan_state()
    voc = C.vocoder_from_state(C.fold_weight_norm(sd) if folded else sd, 16000)
    mel = torch.randn(1, 64, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = voc(mel[0].T), O.hifigan_reference(sd, mel)[0, 0]
    assert ours.shape == ref.shape and ref.shape[0] >= 12 * 160
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_clap_maps_both_ways_exactly():
    hf = O.tiny_hf_clap()
    report = C.Report()
    converted = C.clap_from_state(O.laion_clap_state(hf), report)
    theirs = hf.state_dict()
    assert set(converted.state_dict()) == set(theirs)
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in theirs.items())
    assert sum(report.dropped["clap"].values()) == 11  # front end, masks, head, probes, position ids
    qkv = [C.clap_key_to_hf(k) for k in O.laion_clap_state(hf) if k.endswith("attn.qkv.weight")]
    assert qkv and all(len(v) == 3 for v in qkv)
    # RoBERTa's and LAION's LayerNorm epsilon, not transformers' default 1e-12 (the only numeric gap a
    # peer conversion check found)
    assert converted.config.text_config.layer_norm_eps == 1e-5


def test_unknown_and_missing_keys_are_named():
    sd = O.lightning_state()
    with pytest.raises(ModelError, match="unexpected checkpoint keys.*model.diffusion_modle.x"):
        C.split_lightning(sd | {"model.diffusion_modle.x": torch.zeros(1)}, C.Report())
    clap = O.laion_clap_state(O.tiny_hf_clap())
    with pytest.raises(ModelError, match="CLAP.*audio_branch.extra_layer.weight"):
        C.clap_to_hf(clap | {"audio_branch.extra_layer.weight": torch.zeros(1)})
    unet = O.unet_state()
    unet.pop("middle_block.1.qkv.bias")
    with pytest.raises(ModelError, match="UNet: 1 missing checkpoint keys .middle_block.1.qkv.bias"):
        C.load_strict(MultiTrackUNet(C.unet_config_from_state(unet, latent_channels=8)), unet, "UNet")


def test_ema_weights_are_used_unless_told_otherwise(tmp_path):
    archive = O.write_release(tmp_path / "rel")
    tok = O.tokenizer_folder(tmp_path / "tok")
    raw = O.unet_state()
    C.convert(archive, tmp_path / "ema", tokenizer=tok)
    C.convert(archive, tmp_path / "raw", tokenizer=tok, use_ema=False)
    ema = MultiTrackUNet.from_pretrained(tmp_path / "ema" / "unet").state_dict()
    plain = MultiTrackUNet.from_pretrained(tmp_path / "raw" / "unet").state_dict()
    assert all(torch.equal(plain[k], raw[k]) for k in raw)
    assert all(torch.equal(ema[k], raw[k] + 0.01) for k in raw)
    record = json.loads((tmp_path / "ema" / "convert.json").read_text())
    assert record["mapped"]["unet"] == len(raw) and record["sources"]["unet"] == "last.ckpt"


def test_components_come_from_side_files_when_the_release_lacks_them(tmp_path):
    archive = O.write_release(tmp_path / "rel", conditional=False, with_vae=False)
    with pytest.raises(InputError, match="no vae weights.*vae-ckpt.ckpt"):
        C.convert(archive, tmp_path / "out")
    torch.save({"state_dict": O.vae_state() | {"loss.logvar": torch.zeros(())}}, tmp_path / "rel" / "vae-ckpt.ckpt")
    torch.save({"generator": O.hifigan_state()}, tmp_path / "rel" / "hifigan-ckpt.ckpt")
    report = C.convert(archive, tmp_path / "out")
    assert report.sources == {"unet": "last.ckpt", "vae": "vae-ckpt.ckpt", "vocoder": "hifigan-ckpt.ckpt"}
    pipe = MultiTrackPipeline.from_pretrained(str(tmp_path / "out"), device="cpu")
    assert not pipe.conditional and pipe.codec.vae.config.scaling_factor == pytest.approx(0.8)


def test_vocoder_can_come_from_the_vae_file(tmp_path):
    archive = O.write_release(tmp_path / "rel", conditional=False, with_vae=False)
    voc = {f"vocoder.{k}": v for k, v in C.fold_weight_norm(O.hifigan_state()).items()}
    torch.save({"state_dict": O.vae_state() | voc | {"loss.logvar": torch.zeros(())}}, tmp_path / "rel" / "vae-ckpt.ckpt")
    report = C.convert(archive, tmp_path / "out")
    assert report.sources["vocoder"] == report.sources["vae"] == "vae-ckpt.ckpt"
    assert report.mapped["vocoder"] == len(voc) and report.dropped["vae"] == {"training loss (LPIPS and discriminator)": 1}


def test_pickled_objects_need_trust(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": O.lightning_state(conditional=False), "callbacks": {"cb": C.Report()}}, ckpt)
    with pytest.raises(ModelError, match="pass trust_pickle=True"):
        C.convert(ckpt, tmp_path / "out")
    C.convert(ckpt, tmp_path / "out", trust_pickle=True)
    assert (tmp_path / "out" / "pipeline.json").is_file()


@pytest.mark.parametrize("trust", [False, True])
def test_a_corrupt_checkpoint_is_named_as_such(tmp_path, cli, trust):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"garbage")
    r = cli("convert", bad, "--out", tmp_path / "out", *(["--trust-pickle"] if trust else []))
    assert_one_line_error(r, 3, "not a readable PyTorch checkpoint")
    assert not (tmp_path / "out").exists()


def test_scheduler_carries_the_schedule():
    report = C.Report()
    sched = C.scheduler_from_betas(O.lightning_state(conditional=False)["betas"], report)
    assert sched.config.beta_schedule == "scaled_linear" and not report.notes
    other = C.scheduler_from_betas(torch.linspace(1e-4, 0.02, 1000), report)
    assert other.config.trained_betas is not None and report.notes


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    archive = O.write_release(root / "rel")
    tok = O.tokenizer_folder(root / "tok")
    return archive, tok, root


@pytest.mark.slow  # a subprocess / all five commands
def test_convert_cli_then_all_five_commands(converted, cli, tmp_path, stem_dir):
    archive, tok, _ = converted
    out = tmp_path / "model"
    r = cli("convert", archive, "--out", out, "--tokenizer", tok, "--json", "-q")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["mapped"]["unet"] == len(O.unet_state()) and summary["mapped"]["clap"] > 0
    assert_one_line_error(cli("convert", archive, "--out", out, "--tokenizer", tok), 2, "exists")
    common = ["--model", out, "--steps", "2", "--seed", "0", "-q"]
    g = tmp_path / "gen"
    assert cli("generate", *common, "--duration", "1", "--prompt", "bass and drums", "--out", g).exit_code == 0
    assert cli("condition", *common, "--duration", "1", "--ref", stem_dir / "mix.wav", "--out", tmp_path / "c").exit_code == 0
    r = cli("arrange", *common, "--given", stem_dir / "bass.wav", stem_dir / "drums.wav", "--want", "piano",
            "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    r = cli("separate", stem_dir / "mix.wav", *common, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.stderr
    r = cli("evaluate", "--est", tmp_path / "s", "--ref", stem_dir, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"]


def test_registry_downloads_and_converts_on_first_use(converted, tmp_path, monkeypatch):
    archive, tok, _ = converted
    reg = tmp_path / "reg.toml"
    reg.write_text(
        "[models.official-test]\ndescription = 'test release'\nformat = 'mt-musicldm'\n"
        f"source = {{ url = '{archive.as_uri()}', tokenizer = '{tok}' }}\n"
        "audio = { sample_rate = 16000, segment_seconds = 10.24, stems = ['bass', 'drums', 'guitar', 'piano'] }\n"
    )
    monkeypatch.setenv("MTLDM_REGISTRY", str(reg))
    monkeypatch.setenv("MTLDM_CACHE", str(tmp_path / "cache"))
    calls = []
    counting = Makers(convert=lambda *a, **k: calls.append(1) or C.convert(*a, **k))
    first = resolve_model("official-test", makers=counting)
    record = json.loads((first.path / "convert.json").read_text())
    assert record["source"]["url"] == archive.as_uri() and len(record["source"]["sha256"]) == 64
    assert resolve_model("official-test", offline=True, makers=counting).path == first.path and calls == [1]
    with pytest.raises(ModelError, match="no converter"):
        resolve_model("official-test", cache_dir=tmp_path / "fresh")
    pipe = MultiTrackPipeline.from_pretrained("official-test", device="cpu", offline=True)
    assert pipe.conditional and pipe.config.name == "official-test"


def test_archive_with_several_checkpoints_asks_which(tmp_path):
    archive = O.write_release(tmp_path / "rel", conditional=False)
    run = next((tmp_path / "rel").glob("2024*/checkpoints"))
    (run / "last.ckpt").rename(run / "epoch=1.ckpt")
    shutil.copy(run / "epoch=1.ckpt", run / "epoch=2.ckpt")
    with tarfile.open(archive, "w:gz") as t:
        t.add(run.parent, arcname=run.parent.name)
    with pytest.raises(InputError, match="several checkpoints"):
        C.convert(archive, tmp_path / "out")
    C.convert(run / "epoch=2.ckpt", tmp_path / "out")
