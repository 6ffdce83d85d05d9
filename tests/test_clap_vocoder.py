"""Our own CLAP and the Vocos vocoder: trained by `mtldm train` on tiny configs, loaded through the
loader a user's model takes, used by prompt, reference and arrangement; captions and resume."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtldm_cli.data.captions import HELD_OUT, OPENINGS, caption, sounding
from mtldm_cli.data.render import synthesize
from mtldm_cli.errors import InputError
from mtldm_cli.train import load_config, train

CLAP = {"steps": 4, "batch_size": 2, "lr": 1e-3, "seconds": 1.0, "hop_length": 320, "n_mels": 16, "spec_size": 32,
        "patch_size": 2, "window_size": 4, "audio_hidden": 8, "audio_depths": [1, 1], "audio_heads": [1, 2],
        "text_hidden": 16, "text_layers": 1, "text_heads": 2, "projection_dim": 16, "vocab_size": 1000, "max_tokens": 64}
CONFIG = {
    "name": "tiny-clap-vocos", "audio": {"segment_frames": 64},
    "clap": CLAP,
    "vae": {"steps": 2, "batch_size": 2, "block_out_channels": [8, 16], "norm_groups": 4, "lr": 1e-3},
    "unet": {"steps": 2, "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9,
             "unet": {"model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2],
                      "num_head_channels": 16, "norm_groups": 8, "cond_dim": 16}},
    "vocoder": {"kind": "vocos", "steps": 4, "batch_size": 2, "lr": 1e-3, "dim": 16, "intermediate_dim": 32,
                "num_layers": 1, "window_frames": 16, "discriminators": ["mpd", "mrd"], "adversarial_start": 2,
                "phase_weight": 1.0},
    "validation": {"items": 2, "samples": 0},
    "sampling": {"steps": 3}, "save_every": 1, "log_every": 1,
}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clap-vocos")
    synthesize(root / "train", tracks=2, seconds=3.0, seed=0)
    synthesize(root / "val", tracks=1, seconds=3.0, seed=0, split="validation")
    (root / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "data": {"train": str(root / "train"), "validation": str(root / "val")}}))
    return root


@pytest.fixture(scope="module")
def model(root) -> Path:
    return train(root / "c.yaml", root / "model")


def _pipe(folder):
    from mtldm_cli import MultiTrackPipeline

    return MultiTrackPipeline.from_pretrained(str(folder), device="cpu")


def test_trained_clap_and_vocos_load_through_the_user_loader(model):
    from transformers import ClapModel

    from mtldm_cli.vocoders import VocosVocoder

    pipe = _pipe(model)
    assert pipe.conditional and pipe.config.vocoder == "vocos" and isinstance(pipe.codec.vocoder, VocosVocoder)
    assert isinstance(pipe.conditioner.clap, ClapModel)
    assert pipe.config.clap_sample_rate == 16000 and pipe.config.clap_max_seconds == CLAP["seconds"]
    assert sorted(p.name for p in (model / "clap").iterdir()) == [
        "config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"]


def test_prompt_reference_and_arrange_steer_the_conditioned_model(model, root):
    pipe = _pipe(model)
    track = root / "train" / "Track0000000"
    a = pipe.generate(prompt="a fast funk song at 110 BPM", duration=0.64, seed=0)
    b = pipe.generate(prompt="a slow ballad in D minor with grand piano", duration=0.64, seed=0)
    c = pipe.condition(track / "mix.wav", duration=0.64, seed=0)
    d = pipe.arrange(given={"bass": track / "bass.wav"}, want=["piano"], prompt="a slow ballad", seed=0)
    for out in (a, b, c):
        wav = np.stack(list(out.stems.values()))
        assert wav.shape == (4, 10240) and np.isfinite(wav).all() and np.abs(wav).max() > 0
    assert set(d.stems) == {"bass", "piano"} and np.isfinite(d.stems["piano"]).all()
    assert not np.array_equal(a.stems["drums"], b.stems["drums"])  # the prompt reaches the UNet
    assert not np.array_equal(a.stems["drums"], c.stems["drums"])


def test_validation_and_losses_of_the_new_stages_are_logged(model):
    import csv

    with open(model / "training" / "validation.csv", newline="") as f:
        seen = {(r["stage"], r["metric"]) for r in csv.DictReader(f)}
    assert {("clap", "r1_text_to_audio"), ("clap", "r1_chance"), ("vocoder", "mrstft_vocoder"),
            ("vocoder", "mel_l1_vocoder"), ("vocoder", "mrstft_griffin_lim")} <= seen
    with open(model / "training" / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] in ("clap", "vocoder")]
    disc = {int(r["step"]): r["disc"] for r in rows if r["stage"] == "vocoder"}
    assert disc[1] == disc[2] == "" and all(float(disc[s]) > 0 for s in (3, 4))  # discriminators from step 2 on
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows if r["stage"] == "clap")
    assert all(0 < float(r["phase"]) < 3 * np.pi for r in rows if r["stage"] == "vocoder")
    choice = json.loads((model / "training" / "vocoder.json").read_text())
    assert choice["chosen"] == "vocos" and not choice["fallback"]


class Stop(Exception):
    pass


@pytest.mark.parametrize("stage, weights", [("clap", "clap/model.safetensors"),
                                            ("vocoder", "training/vocoder-trained/model.safetensors")])
def test_clap_and_adversarial_vocoder_resume_to_the_same_weights(root, model, tmp_path, stage, weights):
    """Stopped after step 3 (past the discriminators' start), resumed: bit for bit the uninterrupted run."""
    out = tmp_path / "run"

    def stop(p):
        if p["stage"] == stage and p["i"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train(root / "c.yaml", out, stages=(stage,), progress=stop)
    assert json.loads((out / "training" / stage / "step.json").read_text())["step"] == 3
    train(root / "c.yaml", out, stages=(stage,))
    a, b = load_file(model / weights), load_file(out / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_clap_tokenizer_covers_every_caption(model, root):
    from transformers import ClapProcessor

    tok = ClapProcessor.from_pretrained(model / "clap").tokenizer
    meta = json.loads((root / "train" / "Track0000000" / "meta.json").read_text())
    rng = random.Random(0)
    for held_out in (False, True):
        for _ in range(50):
            ids = tok(caption(meta, rng.uniform(0, 2), 1.0, rng, held_out=held_out)).input_ids
            assert tok.unk_token_id not in ids and len(ids) <= CLAP["max_tokens"]


def test_captions_vary_keep_the_facts_and_hold_out_phrasings(root):
    meta = json.loads((root / "train" / "Track0000000" / "meta.json").read_text())
    rng = random.Random(0)
    train_caps = {caption(meta, 0.0, 1.0, rng) for _ in range(200)}
    held = {caption(meta, 0.0, 1.0, rng, held_out=True) for _ in range(50)}
    assert len(train_caps) > 50  # varied wording
    for cap in train_caps | held:
        assert meta["style"] in cap and cap.count(",") >= 1
    paces = ("slow", "laid-back", "upbeat", "fast")

    def held_opening(cap):
        return any(cap.startswith(o.format(pace=p, style=meta["style"])) for o in OPENINGS[-HELD_OUT:] for p in paces)

    assert not any(held_opening(cap) for cap in train_caps)
    assert all(held_opening(cap) for cap in held)
    assert any(str(round(meta["tempo"])) in c for c in train_caps) and any(meta["key"] in c for c in train_caps)


def test_sounding_stems_follow_the_silent_sections():
    meta = {"programs": {"bass": {}, "drums": {}, "guitar": {}, "piano": {}},
            "sections": [{"name": "intro", "start": 0.0, "end": 4.0, "silent": ["bass", "drums"]},
                         {"name": "verse", "start": 4.0, "end": 8.0, "silent": []}]}
    assert sounding(meta, 0.0, 3.0) == ["guitar", "piano"]
    assert sounding(meta, 3.0, 3.0) == ["bass", "drums", "guitar", "piano"]


def test_clap_config_errors(root):
    base = yaml.safe_load((root / "c.yaml").read_text())
    cases = [({"clap": {**CLAP, "seconds": 10.0}}, "raise clap.hop_length"),
             ({"clap": {**CLAP, "spec_size": 24}}, "multiple of clap.n_mels"),
             ({"unet": {**CONFIG["unet"], "unet": {**CONFIG["unet"]["unet"], "cond_dim": 32}}}, "must be clap.projection_dim")]
    for extra, msg in cases:
        path = root / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **extra}))
        with pytest.raises(InputError, match=msg):
            load_config(path)


def test_a_vocoder_that_does_not_fit_the_front_end_is_a_model_error(model, tmp_path):
    from mtldm_cli.errors import ModelError

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    cfg = json.loads((bad / "vocoder" / "config.json").read_text())
    (bad / "vocoder" / "config.json").write_text(json.dumps({**cfg, "n_mels": 80}))
    with pytest.raises(ModelError, match="80 mels"):
        _pipe(bad)


def test_the_cli_takes_a_prompt_and_a_reference_with_the_trained_model(cli, model, root, tmp_path):
    r = cli("generate", "--model", model, "--prompt", "an upbeat rock song at 120 BPM", "--duration", "0.64",
            "--out", tmp_path / "g", "--json", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ok"] and (tmp_path / "g" / "mix.wav").is_file()
    r = cli("condition", "--model", model, "--ref", root / "train" / "Track0000000" / "mix.wav", "--duration", "0.64",
            "--out", tmp_path / "c", "--json", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "c" / "run.json").read_text())["model"]


def test_the_clap_audio_embedding_hears_the_whole_clip_not_its_first_samples(model):
    """transformers' ClapProcessor passes the tokenizer's max_length (samples!) to the feature
    extractor; the conditioner must embed the whole clip, as training does."""
    pipe = _pipe(model)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 16000, generator=g) * 0.1
    b = a.clone()
    b[:, 4000:] = torch.randn(1, 12000, generator=g) * 0.1  # the same first quarter second
    ea, eb = pipe.conditioner.audio(a), pipe.conditioner.audio(b)
    assert not torch.allclose(ea, eb, atol=1e-4)
    fe = pipe.conditioner.processor.feature_extractor
    from mtldm_cli.audio import resample

    features = fe(list(resample(a, pipe.sample_rate, fe.sampling_rate).numpy()), sampling_rate=fe.sampling_rate,
                  return_tensors="pt")
    assert features["input_features"].shape[-2] == 16000 // CLAP["hop_length"] + 1  # frames of the whole clip
    with torch.no_grad():
        direct = pipe.conditioner.clap.get_audio_features(input_features=features["input_features"]).pooler_output
    assert torch.allclose(torch.nn.functional.normalize(direct, dim=-1), ea, atol=1e-5)


def test_the_vocos_head_spectrum_and_the_phase_losses():
    from mtldm_cli.vocoders import VocosConfig, VocosVocoder, anti_wrapped_phase_loss

    voc = VocosVocoder(VocosConfig(n_mels=16, dim=16, intermediate_dim=32, num_layers=1))
    wav = torch.randn(2, 16 * 256, generator=torch.Generator().manual_seed(0))
    target = voc.target_spectrum(wav)
    assert target.shape == (2, 513, 16)
    assert torch.allclose(voc.head.istft(target), wav, atol=1e-5)  # the head's frames: it inverts exactly
    mel = torch.randn(2, 16, 16)
    assert torch.equal(voc(mel), voc.head.istft(voc.spectrum(mel)))
    assert float(anti_wrapped_phase_loss(target, target)) == 0.0
    assert float(anti_wrapped_phase_loss(target * -1, target)) == pytest.approx(np.pi, rel=1e-4)  # IP only: pi
    wrapped = target * torch.exp(1j * 2 * torch.pi * torch.ones(()))  # a whole turn is no error
    assert float(anti_wrapped_phase_loss(wrapped, target)) < 1e-3
    turned = target * torch.exp(1j * torch.tensor(1.0))  # one angle added to every bin and frame
    assert float(anti_wrapped_phase_loss(turned, target, absolute=False)) < 1e-3  # no origin: no error
    assert float(anti_wrapped_phase_loss(turned, target)) == pytest.approx(1.0, rel=1e-3)


def _trained_vocos(root, tmp_path, **head):
    """A Vocos with ``head`` settings trained 2 steps by the vocoder stage, loaded by the user's loader
    (which must give back the saved weights)."""
    from mtldm_cli.components import load_vocoder
    from mtldm_cli.config import PipelineConfig
    from mtldm_cli.vocoders import VocosVocoder

    cfg = {**CONFIG, "data": {"train": str(root / "train"), "validation": str(root / "val")},
           "vocoder": {**CONFIG["vocoder"], **head, "discriminators": [], "steps": 2}}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(cfg))
    out = train(tmp_path / "v.yaml", tmp_path / "run", stages=("vocoder",))
    folder = out / "training" / "vocoder-trained"
    voc = load_vocoder(PipelineConfig(name="x", vocoder="vocos"), folder)
    assert isinstance(voc, VocosVocoder)
    assert torch.equal(load_file(folder / "model.safetensors")["head.out.weight"], voc.head.out.weight)
    return voc


def test_the_integrated_head_keeps_a_held_note_turning(root, tmp_path):
    """The same log-mel frame after frame (a held note): Vocos' own head gives every frame the same
    phase (the note restarts at each hop), the integrated one advances each bin by its frequency.
    Trained by the vocoder stage, it loads through the user's loader."""
    from mtldm_cli.vocoders import VocosConfig, VocosVocoder

    held = torch.randn(1, 1, 16).expand(1, 48, 16)
    phases = {}
    for phase in ("absolute", "integrated"):
        torch.manual_seed(0)
        voc = VocosVocoder(VocosConfig(n_mels=16, dim=16, intermediate_dim=32, num_layers=1, phase=phase))
        with torch.no_grad():
            phases[phase] = voc.spectrum(held).angle()[0, :, 12:36]  # frames the padded edges do not reach
    steps = {k: torch.remainder(p.diff(dim=-1) + torch.pi, 2 * torch.pi) - torch.pi for k, p in phases.items()}
    assert steps["absolute"].abs().max() < 1e-3
    advance = torch.remainder(2 * torch.pi * torch.arange(513) * 256 / 1024 + torch.pi, 2 * torch.pi) - torch.pi
    turned = (steps["integrated"] - advance[:, None] + torch.pi) % (2 * torch.pi) - torch.pi
    assert turned.abs().max() < 0.05  # at its initialisation: each bin turns at its own frequency

    voc = _trained_vocos(root, tmp_path, phase="integrated")
    assert voc.config.phase == "integrated"
    with torch.no_grad():
        wav = voc(torch.randn(2, 16, 64))
    assert wav.shape == (2, 16 * 160) and torch.isfinite(wav).all()


def test_onset_reset_restarts_the_integrated_phase_from_an_impulse_at_each_attack(tmp_path):
    """With ``onset_reset`` the integrated phase restarts at a log-mel onset from the phase an impulse
    ``onset_delay`` samples after the frame's centre has in the head's own STFT; the frames before it
    are untouched, the frames after keep their advances, the magnitude does not change; the setting
    travels in config.json through the user's loader."""
    from mtldm_cli.components import load_vocoder
    from mtldm_cli.config import PipelineConfig
    from mtldm_cli.vocoders import VocosConfig, VocosVocoder

    torch.manual_seed(0)
    base = dict(n_mels=16, dim=16, intermediate_dim=32, num_layers=1, phase="integrated")
    plain = VocosVocoder(VocosConfig(**base))
    voc = VocosVocoder(VocosConfig(**base, onset_reset=0.5, onset_delay=128))
    voc.load_state_dict(plain.state_dict())
    logmel = torch.full((1, 48, 16), -8.0)
    logmel[:, 20:] = torch.linspace(0, -6, 28)[:, None]  # a hit at frame 20, decaying
    with torch.no_grad():
        before, after = plain.spectrum(logmel), voc.spectrum(logmel)
    assert voc.onsets(logmel)[0].nonzero().flatten().tolist() == [20]
    assert torch.allclose(after.abs(), before.abs())
    assert torch.equal(after[..., :20], before[..., :20])

    def wrapped(x):
        return torch.remainder(x + torch.pi, 2 * torch.pi) - torch.pi

    steps = wrapped(after.angle().diff(dim=-1)[..., 20:] - before.angle().diff(dim=-1)[..., 20:])
    assert steps.abs().max() < 1e-2  # float32 rounding of the summed phase
    impulse = torch.zeros(1, 48 * 256)
    impulse[0, 20 * 256 + 128 + 128] = 1.0  # frame 20's window centre is sample 20 * hop + 128; then the delay
    true = voc.target_spectrum(impulse)[0, :, 20].angle()
    assert wrapped(after[0, :, 20].angle() - true).abs().max() < 1e-3

    voc.save_pretrained(tmp_path / "voc")
    loaded = load_vocoder(PipelineConfig(name="x", vocoder="vocos", audio={"n_mels": 16, "hop_length": 256}), tmp_path / "voc")
    assert (loaded.config.onset_reset, loaded.config.onset_delay) == (0.5, 128)


def test_the_codec_resets_only_the_stems_the_vocos_names():
    """``onset_reset_stems``: LatentCodec tells the Vocos each item's stem; only the drums change,
    the other stems decode exactly as without the reset; a Vocos not told the stems resets none."""
    from diffusers import AutoencoderKL

    from mtldm_cli.codec import LatentCodec
    from mtldm_cli.config import AudioConfig
    from mtldm_cli.vocoders import VocosConfig, VocosVocoder

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=2, block_out_channels=(8,),
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        norm_num_groups=4, layers_per_block=1).eval()
    base = dict(n_mels=16, dim=16, intermediate_dim=32, num_layers=1, phase="integrated")
    plain = VocosVocoder(VocosConfig(**base)).eval()
    drums = VocosVocoder(VocosConfig(**base, onset_reset=0.05, onset_reset_stems=("drums",))).eval()
    drums.load_state_dict(plain.state_dict())
    audio = AudioConfig(n_mels=16, hop_length=256, segment_frames=32)
    z = torch.randn(1, 4, 2, 32, 16, generator=torch.Generator().manual_seed(1))
    before = LatentCodec(audio, vae, plain).decode(z, 32 * 256)
    after = LatentCodec(audio, vae, drums).decode(z, 32 * 256)
    assert audio.stems[1] == "drums"
    assert not torch.allclose(after[0, 1], before[0, 1], atol=1e-4)
    for i in (0, 2, 3):
        assert torch.equal(after[0, i], before[0, i])
    mel = torch.randn(2, 24, 16)
    with torch.no_grad():
        assert torch.equal(drums(mel), plain(mel))


def test_each_named_stem_restarts_its_phase_with_its_own_threshold_and_delay():
    """``onset_reset_stems`` as a mapping: in one batch, each item restarts as a Vocos set up for its
    stem alone would (the drums 128 samples late, the piano at the frame's centre), an unnamed stem
    keeps its summed phase; a list of names takes ``onset_reset`` and ``onset_delay``, and the mapping
    survives config.json."""
    from mtldm_cli.vocoders import OnsetReset, VocosConfig, VocosVocoder

    torch.manual_seed(0)
    base = dict(n_mels=16, dim=16, intermediate_dim=32, num_layers=1, phase="integrated")
    plain = VocosVocoder(VocosConfig(**base)).eval()

    def like_plain(**settings):
        voc = VocosVocoder(VocosConfig(**base, **settings)).eval()
        voc.load_state_dict(plain.state_dict())
        return voc

    mixed = like_plain(onset_reset_stems={"drums": {"threshold": 0.05, "delay": 128},
                                          "piano": {"threshold": 0.05, "delay": 0}})
    late, centred = like_plain(onset_reset=0.05, onset_delay=128), like_plain(onset_reset=0.05, onset_delay=0)
    mel = torch.randn(4, 24, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = mixed(mel, stems=["bass", "drums", "guitar", "piano"])
        for i in (0, 2):
            assert torch.allclose(out[i], plain(mel[i:i + 1])[0], atol=1e-5)
        assert torch.allclose(out[1], late(mel[1:2])[0], atol=1e-5)
        assert torch.allclose(out[3], centred(mel[3:4])[0], atol=1e-5)
        assert not torch.allclose(out[3], late(mel[3:4])[0], atol=1e-3)
    listed = VocosConfig(**base, onset_reset=1.0, onset_delay=64, onset_reset_stems=["drums"])
    assert listed.onset_reset_stems == {"drums": OnsetReset(threshold=1.0, delay=64)}
    assert VocosConfig(**base, onset_reset_stems=["drums"]).onset_reset_stems == {}
    assert VocosConfig.model_validate_json(mixed.config.model_dump_json()) == mixed.config


def test_the_mel_prior_head_starts_at_the_inverse_of_the_mel_filters(root, tmp_path):
    """Untrained, a mel-prior head's magnitude is torchaudio's InverseMelScale of the log-mel (its
    correction starts at zero); the vocoder stage trains it and the user's loader loads it."""
    import torchaudio

    from mtldm_cli.vocoders import VocosConfig, VocosVocoder

    torch.manual_seed(0)
    voc = VocosVocoder(VocosConfig(n_mels=16, dim=16, intermediate_dim=32, num_layers=1, magnitude="mel-prior"))
    logmel = torch.randn(2, 24, 16)
    with torch.no_grad():
        mag = voc.spectrum(logmel).abs()
    inverse = torchaudio.transforms.InverseMelScale(513, n_mels=16, sample_rate=16000, f_min=0.0, f_max=8000.0,
                                                    norm="slaney", mel_scale="slaney")
    expected = inverse(logmel.exp().transpose(-1, -2)).clamp(min=1e-5)
    assert torch.allclose(mag, expected.clip(max=1e2), rtol=1e-3, atol=1e-4)
    learned = VocosVocoder(VocosConfig(n_mels=16, dim=16, intermediate_dim=32, num_layers=1))
    with torch.no_grad():
        assert not torch.allclose(learned.spectrum(logmel).abs(), expected, rtol=0.1)

    voc = _trained_vocos(root, tmp_path, magnitude="mel-prior", phase="integrated")
    assert voc.config.magnitude == "mel-prior"
    assert voc.head.out.weight[:513].abs().sum() > 0  # training moved the correction off zero
    with torch.no_grad():
        wav = voc(torch.randn(2, 16, 64))
    assert wav.shape == (2, 16 * 160) and torch.isfinite(wav).all()


def test_mrstft_weight_scales_the_vocoder_loss(root, tmp_path):
    """With the log-mel and phase terms off, the first step's logged loss is mrstft_weight x the
    MR-STFT distance: the same clips and weights at weights 1 and 3 log losses 1:3."""
    first = {}
    for weight in (1.0, 3.0):
        cfg = {**CONFIG, "data": {"train": str(root / "train"), "validation": str(root / "val")},
               "vocoder": {**CONFIG["vocoder"], "discriminators": [], "steps": 1, "mel_weight": 0.0,
                           "phase_weight": 0.0, "mrstft_weight": weight}}
        (tmp_path / "v.yaml").write_text(yaml.safe_dump(cfg))
        out = train(tmp_path / "v.yaml", tmp_path / f"run{weight}", stages=("vocoder",))
        rows = (out / "training" / "log.csv").read_text().splitlines()
        header = rows[0].split(",")
        first[weight] = float(rows[1].split(",")[header.index("loss")])
    assert first[3.0] == pytest.approx(3 * first[1.0], rel=1e-4)
