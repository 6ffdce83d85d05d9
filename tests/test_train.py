"""Training: a tiny config end to end, exact resume after a kill, accelerate multi-process, bad configs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtldm_cli.data.render import synthesize
from mtldm_cli.errors import InputError
from mtldm_cli.train import StepBatches, load_config, train

from .conftest import assert_one_line_error

TINY = {
    "name": "tiny-trained",
    "audio": {"segment_frames": 64},
    "vae": {"steps": 4, "batch_size": 2, "block_out_channels": [8, 16], "norm_groups": 4, "lr": 1e-3},
    "unet": {"steps": 8, "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9,
             "unet": {"model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                      "attention_resolutions": [2], "num_head_channels": 16, "norm_groups": 8, "cond_dim": None}},
    "sampling": {"steps": 3},
    "save_every": 1,
    "log_every": 1,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    synthesize(root, tracks=2, seconds=3.0, seed=0)
    return root


@pytest.fixture
def config(data, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": {"train": str(data)}}))
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {**load_file(folder / "unet" / "model.safetensors"),
            **{f"vae.{k}": v for k, v in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items()}}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    cfg = folder / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {"train": str(data)}}))
    train(cfg, folder / "model")
    return folder / "model"


def test_trained_folder_loads_and_runs_every_task(trained, data):
    from mtldm_cli import MultiTrackPipeline

    pipe = MultiTrackPipeline.from_pretrained(str(trained), device="cpu")
    assert pipe.config.vocoder == "griffin-lim" and not pipe.conditional
    assert pipe.codec.vae.config.scaling_factor != 1.0  # scale_by_std was measured
    out = pipe.generate(duration=0.64, seed=0)
    wav = np.stack(list(out.stems.values()))
    assert wav.shape == (4, 10240) and np.isfinite(wav).all() and np.abs(wav).max() > 0
    arr = pipe.arrange(given={"bass": data / "Track0000000" / "bass.wav"}, want=["piano"], seed=0)
    assert set(arr.stems) == {"bass", "piano"}
    log = (trained / "training" / "log.csv").read_text().splitlines()
    assert log[0].startswith("stage,step,loss") and {r.split(",")[0] for r in log[1:]} == {"vae", "unet"}
    assert "<polyline" in (trained / "training" / "loss.svg").read_text()


def test_training_lowers_the_loss(trained):
    rows = [r.split(",") for r in (trained / "training" / "log.csv").read_text().splitlines()[1:]]
    unet = [float(r[2]) for r in rows if r[0] == "unet"]
    assert unet[-1] < unet[0]


@pytest.mark.slow  # a subprocess / all five commands
def test_a_killed_run_resumes_to_the_same_weights(config, trained, tmp_path):
    """SIGKILL mid-UNet, resume: the weights equal those of the uninterrupted run, bit for bit."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtldm_cli", "train", str(config), "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "training" / "unet" / "step.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and 2 <= json.loads(state.read_text())["step"] < TINY["unet"]["steps"]:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    killed_at = json.loads(state.read_text())["step"]
    assert killed_at < TINY["unet"]["steps"]
    train(config, out)
    assert json.loads(state.read_text())["step"] == TINY["unet"]["steps"]
    a, b = _weights(trained), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a subprocess / all five commands
def test_runs_under_accelerate_launch_with_two_cpu_processes(config, tmp_path):
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "mtldm_cli", "train", str(config), "--out", str(out), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "training" / "unet" / "random_states_1.pkl").is_file()  # two processes took part
    assert json.loads((out / "training" / "unet" / "step.json").read_text())["step"] == TINY["unet"]["steps"]
    from mtldm_cli import MultiTrackPipeline

    assert len(MultiTrackPipeline.from_pretrained(str(out), device="cpu").generate(duration=0.3, seed=0).stems) == 4


def test_step_batches_resume_exactly_and_split_processes():
    full = list(StepBatches(10, 3, seed=0, stage=1, start=0, stop=9))
    assert list(StepBatches(10, 3, seed=0, stage=1, start=5, stop=9)) == full[5:]
    assert all(len(b) == 3 for b in full)
    r0 = list(StepBatches(10, 2, 0, 1, 0, 4, rank=0, world=2))
    r1 = list(StepBatches(10, 2, 0, 1, 0, 4, rank=1, world=2))
    for a, b in zip(r0, r1):
        assert not {i for i, _ in a} & {i for i, _ in b} and a[0][1] == b[0][1]
    assert {e for b in full for _, e in b} == {0, 1, 2}  # epochs move on, so shifts are redrawn


def test_the_example_config_is_valid():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "example.yaml")
    assert cfg.data.train.name == "train" and cfg.data.train.is_absolute()
    assert cfg.unet.unet.cond_dim is None


def test_config_errors_are_one_line(cli, config, data, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {train: " + str(data) + "}\nvae: {stepz: 3}\n")
    assert_one_line_error(cli("train", bad, "--out", tmp_path / "o"), 2, "vae.stepz", "extra inputs")
    bad.write_text("name: [unclosed\n")
    assert_one_line_error(cli("train", bad, "--out", tmp_path / "o"), 2, "not valid yaml")
    assert_one_line_error(cli("train", tmp_path / "none.yaml", "--out", tmp_path / "o"), 2, "no such config")
    toml = tmp_path / "c.toml"
    toml.write_text(f'name = "t"\n[data]\ntrain = "{tmp_path / "missing"}"\n')
    assert_one_line_error(cli("train", toml, "--out", tmp_path / "new" / "o"), 2, "not a folder")
    assert not (tmp_path / "new").exists()  # nothing was written, so no folder is left behind
    with pytest.raises(InputError, match="unknown stage"):
        train(load_config(config), tmp_path / "o", stages=("gan",))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert_one_line_error(cli("train", config, "--out", tmp_path / "busy"), 4, "not a training run")


def test_resume_refuses_another_config_and_no_resume_needs_force(cli, config, trained, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    other = tmp_path / "other.yaml"
    cfg = yaml.safe_load(config.read_text())
    other.write_text(yaml.safe_dump({**cfg, "seed": 1}))
    assert_one_line_error(cli("train", other, "--out", out), 4, "another config")
    assert_one_line_error(cli("train", config, "--out", out, "--no-resume"), 4, "holds a training run")
    r = cli("train", config, "--out", out, "--json")  # same config, all steps done: nothing to do
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"]


# ----- CLAP conditioning, the vocoder stage and validation --------------------------------------

@pytest.fixture(scope="module")
def full(data, tmp_path_factory) -> Path:
    """Every stage on a tiny config: a UNet conditioned on a given CLAP folder, a HiFi-GAN vocoder with
    Vocos' multi-resolution discriminator from step 3, validation at each save."""
    from mtldm_cli.config import PipelineConfig
    from mtldm_cli.tiny import CLAP_DIM, tiny_clap

    root = tmp_path_factory.mktemp("full")
    synthesize(root / "val", tracks=1, seconds=3.0, seed=0, split="validation")
    tiny_clap(root / "clap", PipelineConfig(name="clap", clap_max_seconds=2.0))
    cfg = {**TINY, "data": {"train": str(data), "validation": str(root / "val")},
           "unet": {**TINY["unet"], "steps": 4, "clap": str(root / "clap"),
                    "unet": {**TINY["unet"]["unet"], "cond_dim": CLAP_DIM}},
           "vocoder": {"kind": "hifigan", "steps": 4, "batch_size": 2, "upsample_initial_channel": 16,
                       "upsample_rates": [4, 4, 10], "window_frames": 16, "discriminators": ["mrd"],
                       "mrd_fft_sizes": [512, 256], "adversarial_start": 3},
           "validation": {"items": 2, "samples": 1, "sample_steps": 2}, "save_every": 2}
    (root / "full.yaml").write_text(yaml.safe_dump(cfg))
    train(root / "full.yaml", root / "model")
    return root / "model"


def test_clap_conditioned_training_makes_a_conditional_model(full, data):
    from transformers import SpeechT5HifiGan

    from mtldm_cli import MultiTrackPipeline

    pipe = MultiTrackPipeline.from_pretrained(str(full), device="cpu")
    assert pipe.conditional and pipe.config.clap_max_seconds == 2.0
    assert pipe.config.vocoder == "hifigan" and isinstance(pipe.codec.vocoder, SpeechT5HifiGan)
    out = pipe.condition(data / "Track0000000" / "mix.wav", duration=0.64, seed=0)
    wav = np.stack(list(out.stems.values()))
    assert wav.shape == (4, 10240) and np.isfinite(wav).all()
    with open(full / "training" / "log.csv") as f:
        disc = [r.split(",")[6] for r in f.read().splitlines()[1:] if r.startswith("vocoder,")]
    assert disc[:3] == ["", "", ""] and float(disc[3]) > 0  # the discriminator joined at step 3


def test_validation_is_logged_at_every_save_with_sampled_clips(full):
    import csv

    with open(full / "training" / "validation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seen = {(r["stage"], r["metric"], int(r["step"])) for r in rows}
    for step in (2, 4):
        assert {("vae", "mel_l1", step), ("vae", "mrstft_griffin_lim", step), ("unet", "eps_mse", step),
                ("vocoder", "mrstft_vocoder", step), ("vocoder", "mrstft_griffin_lim", step)} <= seen
    assert all(np.isfinite(float(r["value"])) for r in rows)
    clips = full / "training" / "samples" / "unet-0000004" / "seed0"
    assert sorted(p.name for p in clips.iterdir()) == ["bass.wav", "drums.wav", "guitar.wav", "mix.wav", "piano.wav", "run.json"]
    for stage in ("vae", "vocoder"):  # each stage's state holds only its own objects (the UNet's EMA is not carried over)
        assert not list((full / "training" / stage).glob("custom_checkpoint*"))
    assert list((full / "training" / "unet").glob("custom_checkpoint*"))
    choice = json.loads((full / "training" / "vocoder.json").read_text())
    assert choice["kind"] == choice["chosen"] == "hifigan"
    assert choice["mrstft_vocoder"] > 0 and choice["mrstft_griffin_lim"] > 0


def test_fallback_keeps_griffin_lim_unless_the_trained_vocoder_beats_it(full, tmp_path):
    """The choice follows the measurement: replay it on a copy of the run with each winner."""
    import shutil

    from mtldm_cli.train import TrainConfig, Trainer, stage_runners

    run = tmp_path / "run"
    shutil.copytree(full, run)
    saved = json.loads((run / "training" / "config.json").read_text())
    saved["vocoder"]["fallback"] = True
    vocoder = stage_runners(Trainer(TrainConfig.model_validate(saved), run))["vocoder"]
    for hifigan, gl, want in ((9.0, 1.0, "griffin-lim"), (1.0, 9.0, "hifigan")):
        with open(run / "training" / "validation.csv", "a") as f:
            f.write(f"vocoder,99,mrstft_vocoder,{hifigan}\nvocoder,99,mrstft_griffin_lim,{gl}\n")
        vocoder.choose()
        assert json.loads((run / "pipeline.json").read_text())["vocoder"] == want
        assert (run / "vocoder").is_dir() == (want == "hifigan")


def test_null_embedding_replaces_the_given_fraction(full):
    from mtldm_cli.train import MixClap

    mix = torch.randn(64, 16000) * 0.1
    for fraction, expect in ((0.0, 0), (1.0, 64)):
        clap = MixClap(full / "clap", 16000, fraction, "cpu")
        emb = clap.embed(mix[:2].repeat(32, 1), torch.Generator().manual_seed(0))
        assert int(torch.isclose(emb, clap.null).all(-1).sum()) == expect
    clap = MixClap(full / "clap", 16000, 0.1, "cpu")
    nulls = sum(int(torch.isclose(clap.embed(mix[:1].repeat(64, 1), torch.Generator().manual_seed(s)), clap.null)
                    .all(-1).sum()) for s in range(10))
    assert 30 <= nulls <= 100  # 10% of 640


def test_vocoder_and_window_config_errors(tmp_path, data):
    base = {**TINY, "data": {"train": str(data)}}
    cases = [({"vocoder": {"kind": "hifigan", "upsample_rates": [4, 4]}}, "multiply to 16"),
             ({"data": {"train": str(data), "window_frames": 30}}, r"data.window_frames \(30\) must be a multiple of 4"),
             ({"unet": {**TINY["unet"], "window_frames": 30}}, r"unet.window_frames \(30\) must be a multiple of 4"),
             ({"data": {"train": str(data), "window_frames": 31}, "unet": {**TINY["unet"], "window_frames": 32}},
              r"data.window_frames \(31\) must be a multiple of 2 \(VAE downsampling\)"),
             ({"unet": {**TINY["unet"], "unet": {**TINY["unet"]["unet"], "cond_dim": 32}}}, "cond_dim goes with a CLAP")]
    for extra, msg in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **extra}))
        with pytest.raises(InputError, match=msg):
            load_config(path)


# ----- an arrangement-trained UNet: given stems and their mask as input ------------------------------

def test_arrangement_masks_give_proper_subsets_and_prefixes():
    from mtldm_cli.train.stages import arrangement_masks

    g = torch.Generator().manual_seed(0)
    m = arrangement_masks((2000, 4, 8, 16, 8), 0.8, 0.2, g)
    per_stem = m[:, :, 0, -1, 0]  # the last frame is never in a prefix
    given = per_stem.sum(1)
    assert set(given.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}  # never all four stems
    assert abs(float((given > 0).float().mean()) - 0.8) < 0.04
    assert len({tuple(r.tolist()) for r in per_stem}) == 15  # all 14 proper subsets, and none
    prefix = m[:, :, 0, 0, 0].sum(1) == 4
    assert 0.1 < float(prefix.float().mean()) < 0.4
    assert bool((m[prefix][:, :, 0, 8:, 0].sum((1, 2)) < 4 * 8).all())  # at most half the window


def test_an_arrangement_trained_unet_is_given_the_stems(data, tmp_path):
    from mtldm_cli import MultiTrackPipeline

    cfg = {**TINY, "data": {"train": str(data)}, "unet": {**TINY["unet"], "steps": 2,
                                                          "unet": {**TINY["unet"]["unet"], "arrangement": True}}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    pipe = MultiTrackPipeline.from_pretrained(str(train(tmp_path / "a.yaml", tmp_path / "model")), device="cpu")
    assert pipe.unet.config.arrangement
    seen = []
    forward = pipe.unet.forward

    def spy(x, t, cond=None, given=None):
        seen.append(given)
        return forward(x, t, cond, given=given)

    pipe.unet.forward = spy
    out = pipe.arrange(given={"bass": data / "Track0000000" / "bass.wav"}, want=["piano"], seed=0)
    assert set(out.stems) == {"bass", "piano"} and np.isfinite(out.stems["piano"]).all()
    x0, mask = seen[0]
    assert mask.flatten(2).amax(-1).squeeze(0).tolist() == [1.0, 0.0, 0.0, 0.0]  # bass given
    assert x0[:, 0].abs().sum() > 0
    seen.clear()
    guided = pipe.arrange(given={"bass": data / "Track0000000" / "bass.wav"}, want=["piano"], seed=0, given_guidance=3.0)
    x0, mask = seen[0]
    assert mask.flatten(2).amax(-1).tolist() == [[0.0] * 4, [1.0, 0.0, 0.0, 0.0]]  # nothing given, then the bass
    assert not np.allclose(guided.stems["piano"], out.stems["piano"])
    seen.clear()
    pipe.generate(duration=0.64, seed=0)
    assert seen and all(g is None for g in seen)  # total generation: nothing given
    with pytest.raises(ValueError, match="not trained for arrangement"):
        from mtldm_cli.model import MultiTrackUNet, UNetConfig

        unet = MultiTrackUNet(UNetConfig(**{**TINY["unet"]["unet"], "arrangement": False}))
        unet(torch.zeros(1, 4, 8, 8, 8), torch.tensor(1), given=(torch.zeros(1, 4, 8, 8, 8), torch.zeros(1, 4, 1, 1, 1)))


def test_the_unet_trains_on_its_own_window_length(data, tmp_path, monkeypatch):
    """unet.window_frames: the UNet learns (and validation samples) whole long windows while the VAE
    keeps the short data.window_frames."""
    import soundfile as sf
    from diffusers import AutoencoderKL

    from mtldm_cli.model import MultiTrackUNet

    seen: dict[str, set] = {"unet": set(), "vae": set()}
    unet_forward, vae_encode = MultiTrackUNet.forward, AutoencoderKL.encode

    def unet_spy(self, x, *args, **kwargs):
        seen["unet"].add(x.shape[-2])
        return unet_forward(self, x, *args, **kwargs)

    def vae_spy(self, x, *args, **kwargs):
        if self.training:
            seen["vae"].add(x.shape[-2])
        return vae_encode(self, x, *args, **kwargs)

    monkeypatch.setattr(MultiTrackUNet, "forward", unet_spy)
    monkeypatch.setattr(AutoencoderKL, "encode", vae_spy)
    synthesize(tmp_path / "val", tracks=1, seconds=3.0, seed=0, split="validation")
    cfg = {**TINY, "data": {"train": str(data), "validation": str(tmp_path / "val"), "window_frames": 16},
           "unet": {**TINY["unet"], "steps": 2, "window_frames": 32},
           "validation": {"items": 1, "samples": 1, "sample_steps": 1}, "save_every": 2}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(cfg))
    model = train(tmp_path / "w.yaml", tmp_path / "model")
    assert seen["vae"] == {16}  # mel frames of the VAE's training windows
    assert 16 in seen["unet"]  # latent frames: 32 mel frames at the VAE's 2x
    mix, rate = sf.read(model / "training" / "samples" / "unet-0000002" / "seed0" / "mix.wav")
    assert len(mix) == 32 * 160 and rate == 16000  # 32 mel frames at the default hop
