"""Sampler presets (paper DDIM vs fast DPM-Solver++), diffusers-scheduler sampling with imputation,
and long audio in overlapping windows."""

import numpy as np
import pytest
import torch

from mtldm_cli.config import PRESETS
from mtldm_cli.errors import InputError
from mtldm_cli.samplers import sample_scheduler

from .conftest import SR, synth_stems


def test_presets_and_overrides(pipe):
    assert pipe._sampling(None, None, None, None) == ("dpm++", pipe.config.sampling.steps, 1.0)
    assert pipe._sampling("paper", None, None, None) == ("ddim", 200, 1.0)
    assert PRESETS["paper"] == {"sampler": "ddim", "steps": 200, "eta": 1.0}
    assert pipe._sampling("paper", "dpm++", 7, 0.0) == ("dpm++", 7, 0.0)
    with pytest.raises(InputError, match="unknown preset"):
        pipe._sampling("slow", None, None, None)
    with pytest.raises(InputError, match="unknown sampler"):
        pipe._sampling(None, "euler", None, None)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_each_sampler_is_seeded_and_recorded(pipe, sampler):
    a = pipe.generate(duration=0.5, steps=3, seed=1, sampler=sampler)
    b = pipe.generate(duration=0.5, steps=3, seed=1, sampler=sampler)
    assert np.array_equal(a.mix, b.mix) and np.abs(a.mix).max() > 0
    assert a.info["sampler"] == sampler and a.info["steps"] == 3 and ("eta" in a.info) == (sampler == "ddim")


def test_scheduler_sampler_imputes_known_parts(pipe):
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", steps_offset=0)
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 2, 8, 4, generator=g)
    mask = torch.tensor([1.0, 0, 0, 1]).reshape(1, 4, 1, 1, 1)
    seen = []

    def model_fn(x, t):
        seen.append(float((x * mask).std()))
        return torch.zeros_like(x)

    out = sample_scheduler(model_fn, torch.randn(x0.shape, generator=g), sched, generator=g, known=(x0, mask))
    assert torch.equal(out[:, [0, 3]], x0[:, [0, 3]]) and len(seen) == 4


def test_window_layout(pipe):
    w = pipe.window
    assert pipe.window_starts(w) == [0] and pipe.window_starts(w // 2) == [0]
    starts = pipe.window_starts(3 * w)
    overlap = round(pipe.config.sampling.window_overlap_seconds * SR / 160 / pipe.vae_factor)
    assert starts[1] == w - overlap and starts[-1] == 2 * w
    assert all(b - a <= w - overlap for a, b in zip(starts, starts[1:]))
    x = torch.randn(2, 1, 3 * w, 4)
    assert torch.equal(pipe._by_windows(lambda v: v * 2, x, 3 * w, 1, 1), x * 2)
    up = pipe._by_windows(lambda v: v.repeat_interleave(4, dim=-2), x, 3 * w, 1, 4)
    assert torch.equal(up, x.repeat_interleave(4, dim=-2))


def test_long_generation_continues_across_windows(pipe, monkeypatch):
    calls = []
    real = pipe._denoise

    def spy(model_fn, x, **kw):
        out = real(model_fn, x, **kw)
        calls.append((kw["known"], out.clone()))
        return out

    monkeypatch.setattr(pipe, "_denoise", spy)
    seconds = 1.6 * pipe.config.audio.segment_seconds
    out = pipe.generate(duration=seconds, steps=2, seed=0)
    assert len(out.mix) == round(seconds * SR) and out.info["windows"] == 2 and len(calls) == 2
    (k0, z0), (k1, _) = calls
    assert k0 is None
    x0, mask = k1
    frames = pipe._frames(len(out.mix)) // pipe.vae_factor
    overlap = 2 * pipe.window - frames  # window 0 is [0, W), window 1 is [frames - W, frames)
    assert pipe.window_starts(frames) == [0, frames - pipe.window] and overlap > 0
    assert torch.equal(x0[..., :overlap, :], z0[..., -overlap:, :])
    assert mask[..., :overlap, :].eq(1).all() and mask[..., overlap:, :].eq(0).all()


def test_long_arrangement_keeps_given_stems_exact(pipe):
    seconds = 1.3 * pipe.config.audio.segment_seconds
    stems = synth_stems(seconds)
    out = pipe.arrange({"bass": stems["bass"], "drums": stems["drums"]}, ["piano"], sample_rate=SR, steps=2, seed=0)
    assert out.info["windows"] == 2
    assert np.array_equal(out.stems["bass"], stems["bass"].astype(np.float32)) and len(out.stems["piano"]) == len(stems["bass"])
