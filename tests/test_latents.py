"""The UNet stage's latent cache and a stage's own precision: cached windows are the windows encoded
alone, the build resumes and rebuilds when its inputs change, and a cached run never reads audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtldm_cli.audio import MelFrontEnd
from mtldm_cli.config import AudioConfig
from mtldm_cli.data.datasets import StemDataset, read_segment
from mtldm_cli.data.render import synthesize
from mtldm_cli.errors import InputError
from mtldm_cli.train import load_config, train
from mtldm_cli.train.latents import LatentCache
from mtldm_cli.train.loop import stem_mels

from .test_train import TINY

AUDIO = AudioConfig(segment_frames=64)
FRAMES, STRIDE = 32, 16


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("latent-data")
    synthesize(root, tracks=2, seconds=1.5, seed=3)
    return root


def _vae(folder: Path, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, layers_per_block=1).eval()
    vae.save_pretrained(folder)
    return vae


def _embed(mix: torch.Tensor) -> torch.Tensor:
    """A stand-in CLAP: any fixed function of the mix shows which audio the cache embedded."""
    return torch.stack([mix.abs().mean(-1), mix.std(-1), mix[..., :100].sum(-1)], -1)


def _build(folder: Path, data: Path, vae, vae_folder: Path, counts: list[int] | None = None) -> LatentCache:
    ds = StemDataset(data, segment_seconds=FRAMES * AUDIO.hop_length / AUDIO.sample_rate)

    def progress(i: int, n: int) -> None:
        if counts is not None and i == 1:
            counts.append(n)

    return LatentCache.build(folder, ds, vae, MelFrontEnd(AUDIO), audio=AUDIO, frames=FRAMES, stride=STRIDE,
                             vae_folder=vae_folder, clap=_embed, progress=progress)


def test_a_cached_window_is_that_window_encoded_alone(data, tmp_path):
    vae = _vae(tmp_path / "vae", 0)
    cache = _build(tmp_path / "cache", data, vae, tmp_path / "vae")
    ds = StemDataset(data, segment_seconds=FRAMES * 160 / 16000)
    per_track = (int(1.5 * 16000) // 160 - FRAMES) // STRIDE + 1
    assert len(cache) == len(ds.tracks) * per_track
    front = MelFrontEnd(AUDIO)
    for i in range(len(cache)):
        k, start = cache.locate(i)
        assert start % STRIDE == 0
        stems = read_segment(ds.tracks[k], ds.stems, start * 160 / 16000, FRAMES * 160 / 16000, 16000)[None]
        with torch.no_grad():
            post = vae.encode(stem_mels(front, stems, FRAMES)).latent_dist
        item = cache[(i, 7)]  # any epoch: the grid does not move
        assert item["mean"].dtype == torch.float16 and item["mean"].shape == post.mean.shape
        torch.testing.assert_close(item["mean"].float(), post.mean, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(item["std"].float(), post.std, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(item["clap"], _embed(stems.sum(1))[0])
    assert cache.locate(1)[1] == STRIDE  # the second window of the first track is one stride on


def test_the_build_encodes_only_what_is_missing_and_rebuilds_for_another_vae(data, tmp_path):
    vae = _vae(tmp_path / "vae", 0)
    folder, counts = tmp_path / "cache", []
    first = _build(folder, data, vae, tmp_path / "vae", counts)
    assert counts == [2]  # both tracks
    files = sorted(folder.glob("*.pt"))
    files[0].unlink()  # as if the build had been stopped before its first track was written
    again = _build(folder, data, vae, tmp_path / "vae", counts)
    assert counts == [2, 1]
    assert all(torch.equal(first[i]["mean"], again[i]["mean"]) for i in range(len(first)))
    _build(folder, data, vae, tmp_path / "vae", counts)
    assert counts == [2, 1]  # finished: nothing encoded
    other = _vae(tmp_path / "other", 1)
    rebuilt = _build(folder, data, other, tmp_path / "other", counts)
    assert counts == [2, 1, 2]
    assert not torch.equal(rebuilt[0]["mean"], first[0]["mean"])


def test_a_track_lost_after_the_scan_is_left_out(data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    ds = StemDataset(copy, segment_seconds=FRAMES * 160 / 16000)
    (copy / ds.tracks[0].name / "bass.wav").write_bytes(b"not audio")
    vae = _vae(tmp_path / "vae", 0)
    cache = LatentCache.build(tmp_path / "cache", ds, vae, MelFrontEnd(AUDIO), audio=AUDIO, frames=FRAMES,
                              stride=STRIDE, vae_folder=tmp_path / "vae")
    assert {cache.locate(i)[0] for i in range(len(cache))} == {1}
    assert ds.skipped and ds.tracks[0].name in ds.skipped[0][0]


def test_a_cached_bf16_run_reads_no_audio_and_makes_a_conditional_model(data, tmp_path, monkeypatch):
    """With unet.cache_stride_frames every training batch (and scale_by_std) comes from the cache: the
    dataset's reads are made to fail after the scan, and the run still trains. The UNet's forward
    runs under bf16 autocast (unet.mixed_precision) while its saved weights stay float32."""
    from mtldm_cli import MultiTrackPipeline
    from mtldm_cli.config import PipelineConfig
    from mtldm_cli.model import MultiTrackUNet
    from mtldm_cli.tiny import CLAP_DIM, tiny_clap

    tiny_clap(tmp_path / "clap", PipelineConfig(name="clap", clap_max_seconds=1.0))
    cfg = {**TINY, "data": {"train": str(data)}, "vae": {**TINY["vae"], "steps": 2},
           "unet": {**TINY["unet"], "steps": 3, "window_frames": 32, "cache_stride_frames": 16,
                    "mixed_precision": "bf16", "clap": str(tmp_path / "clap"),
                    "unet": {**TINY["unet"]["unet"], "cond_dim": CLAP_DIM, "arrangement": True}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp_path / "c.yaml", tmp_path / "model", stages=("vae",))

    def no_audio(self, index):
        raise AssertionError("the UNet stage read audio")

    dtypes: set = set()
    forward = MultiTrackUNet.forward

    def spy(self, *args, **kwargs):
        if self.training:
            dtypes.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(StemDataset, "__getitem__", no_audio)
    monkeypatch.setattr(MultiTrackUNet, "forward", spy)
    model = train(tmp_path / "c.yaml", tmp_path / "model", stages=("unet",))
    assert dtypes == {torch.bfloat16}
    assert {v.dtype for v in load_file(model / "unet" / "model.safetensors").values()} == {torch.float32}
    assert (model / "training" / "latents" / "index.json").is_file()
    rows = (model / "training" / "log.csv").read_text().splitlines()
    assert sum(r.startswith("unet,") for r in rows) == 3
    monkeypatch.undo()
    pipe = MultiTrackPipeline.from_pretrained(str(model), device="cpu")
    assert pipe.conditional
    out = pipe.generate(prompt="a fast funk song", duration=0.64, seed=0)
    assert np.isfinite(np.stack(list(out.stems.values()))).all()
    bass = out.stems["bass"]
    given = pipe.arrange({"bass": bass}, want=["piano"], prompt="a fast funk song", seed=0)
    assert np.array_equal(given.stems["bass"], bass) and np.isfinite(given.stems["piano"]).all()
    assert given.info["prompt"] == "a fast funk song"


def test_without_the_cache_the_same_patch_bites(data, tmp_path, monkeypatch):
    """The control for the test above: an uncached UNet stage reads audio every step."""
    cfg = {**TINY, "data": {"train": str(data)}, "vae": {**TINY["vae"], "steps": 1},
           "unet": {**TINY["unet"], "steps": 1, "window_frames": 32}}
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp_path / "u.yaml", tmp_path / "model", stages=("vae",))

    def no_audio(self, index):
        raise AssertionError("the UNet stage read audio")

    monkeypatch.setattr(StemDataset, "__getitem__", no_audio)
    with pytest.raises(AssertionError, match="read audio"):
        train(tmp_path / "u.yaml", tmp_path / "model", stages=("unet",))


def test_cache_stride_must_fit_the_vae(data, tmp_path):
    cfg = {**TINY, "data": {"train": str(data)}, "unet": {**TINY["unet"], "cache_stride_frames": 3}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match="cache_stride_frames"):
        load_config(tmp_path / "bad.yaml")


def test_training_progress_names_the_stage_and_step(cli, data, tmp_path):
    """Off a terminal, training prints the stage and step it is on (each report used to read as a new stage)."""
    cfg = {**TINY, "data": {"train": str(data)}, "vae": {**TINY["vae"], "steps": 2},
           "unet": {**TINY["unet"], "steps": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    result = cli("train", tmp_path / "p.yaml", "--out", tmp_path / "model")
    assert result.exit_code == 0, result.stderr
    assert "training: vae step 1/2" in result.stderr and "training: unet step 2/2" in result.stderr


class Stop(Exception):
    pass


def test_a_cached_run_stopped_and_resumed_makes_the_same_weights(data, tmp_path):
    """The cache's batches and draws depend on the step alone: resuming is bit-exact, as without it."""
    cfg = {**TINY, "data": {"train": str(data)}, "vae": {**TINY["vae"], "steps": 1},
           "unet": {**TINY["unet"], "steps": 4, "window_frames": 32, "cache_stride_frames": 16,
                    "mixed_precision": "bf16", "unet": {**TINY["unet"]["unet"], "arrangement": True}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    whole = train(tmp_path / "r.yaml", tmp_path / "whole")

    def stop(p):
        if p.get("stage") == "unet" and p["i"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(tmp_path / "r.yaml", tmp_path / "parts", progress=stop)
    parts = train(tmp_path / "r.yaml", tmp_path / "parts")
    a, b = (load_file(m / "unet" / "model.safetensors") for m in (whole, parts))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
