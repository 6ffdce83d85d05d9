"""Options resolution (paper DDIM vs fast DPM-Solver++), the windows, and long audio in overlapping windows."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mtldm_cli import sampling
from mtldm_cli.config import PRESETS, SamplingDefaults
from mtldm_cli.errors import InputError
from mtldm_cli.options import SamplingOptions, SeparationOptions
from mtldm_cli.windows import OverlapAdd, Window, crossfade, plan, stitch

from .conftest import SR, synth_stems


def test_presets_and_overrides():
    d = SamplingDefaults(steps=10)
    resolve = SamplingOptions.resolve
    assert resolve(d, seed=0).model_dump(exclude={"seed"}) == dict(sampler="dpm++", steps=10, eta=1.0, guidance=2.0,
                                                                    preset=None, resample=1, reconstruction=0.0,
                                                                    given_guidance=1.0)
    assert PRESETS["paper"] == {"sampler": "ddim", "steps": 200, "eta": 1.0}
    assert (resolve(d, preset="paper").sampler, resolve(d, preset="paper").steps) == ("ddim", 200)
    o = resolve(d, preset="paper", sampler="dpm++", steps=7, eta=0.0)
    assert (o.sampler, o.steps, o.eta) == ("dpm++", 7, 0.0)
    assert resolve(d, task="arrange").guidance == d.arrange_guidance and resolve(d, guidance=0.0).guidance == 0.0
    with pytest.raises(InputError, match="preset='slow': unknown preset"):
        resolve(d, preset="slow")
    with pytest.raises(InputError, match="sampler='euler'"):
        resolve(d, sampler="euler")
    with pytest.raises(ValidationError, match="frozen"):
        o.steps = 3  # resolved once


def test_an_arrangement_takes_its_own_sampler_and_resamples_only_with_ddim():
    """A model may arrange with RePaint (ddim, resampled) while it generates with DPM-Solver++."""
    d = SamplingDefaults(steps=10, arrange_sampler="ddim", arrange_resample=4)
    resolve = SamplingOptions.resolve
    arrange = resolve(d, task="arrange")
    assert (arrange.sampler, arrange.resample, arrange.steps) == ("ddim", 4, 10)
    assert (resolve(d).sampler, resolve(d).resample) == ("dpm++", 1)  # generate keeps the model's sampler
    fast = resolve(d, task="arrange", sampler="dpm++")  # another sampler: the resampling default drops
    assert (fast.sampler, fast.resample) == ("dpm++", 1)
    assert (resolve(d, task="arrange", preset="fast").sampler, resolve(d, task="arrange", preset="fast").resample) \
        == ("dpm++", 1)
    paper = resolve(d, task="arrange", preset="paper")
    assert (paper.sampler, paper.steps, paper.resample) == ("ddim", 200, 4)
    assert resolve(d, task="arrange", resample=2).resample == 2
    with pytest.raises(InputError, match="resample=2: RePaint resampling needs the ddim sampler"):
        resolve(d, task="arrange", sampler="dpm++", resample=2)
    plain = SamplingDefaults(steps=10, arrange_resample=4)  # no arrangement sampler: the model's dpm++
    assert (resolve(plain, task="arrange").sampler, resolve(plain, task="arrange").resample) == ("dpm++", 1)


def test_separation_options():
    d = SamplingDefaults(separate_steps=12)
    o = SeparationOptions.resolve(d, seed=1)
    assert (o.method, o.steps, o.s_churn, o.resamples, o.wiener) == ("dirac", 12, 20.0, 2, True)
    assert SeparationOptions.resolve(d, steps=3, s_churn=None).steps == 3
    for bad in ({"steps": 0}, {"resamples": 0}, {"sigma_min": 0.0}, {"method": "magic"}):
        with pytest.raises(InputError, match=f"{next(iter(bad))}="):
            SeparationOptions.resolve(d, **bad)


def test_window_plan_covers_and_overlaps():
    assert plan(50, 64, 16) == [Window(0, 0, 50, 0, 50, 0, 0)]
    ws = plan(200, 64, 16)
    assert [w.start for w in ws] == [0, 48, 96, 136] and ws[-1].stop == 200
    for a, b in zip(ws, ws[1:]):
        assert a.after == b.before == a.stop - b.start >= 16
        assert a.keep_stop == b.keep_start == (a.stop + b.start) // 2  # each overlap cut at its middle
    assert ws[0].keep_start == 0 and ws[-1].keep_stop == 200


def test_stitch_takes_each_window_up_to_the_middle_of_its_overlaps():
    ws = plan(200, 64, 16)
    x = torch.zeros(1, 200, 2)
    calls = []

    def tag(v):  # which window produced each frame
        calls.append(v.shape[-2])
        return torch.full_like(v, float(len(calls) - 1)).repeat_interleave(4, dim=-2)

    y = stitch(tag, x, ws, 1, 4)
    assert calls == [64] * 4 and y.shape == (1, 800, 2)
    for w in ws:
        assert y[0, w.keep_start * 4:w.keep_stop * 4].eq(w.index).all()
    assert torch.equal(stitch(lambda v: v * 2, x + 1, ws), x * 0 + 2)


def test_crossfades_of_neighbours_sum_to_one():
    ws = plan(1000, 300, 100)
    total = torch.zeros(1000)
    for w in ws:
        total[w.start:w.stop] += crossfade(w)
    assert torch.allclose(total, torch.ones(1000))
    first = crossfade(ws[0])
    assert first[:200].eq(1).all() and 0 < first[-1] < first[-100] < 1
    # the last window, aligned to the end, may reach back over two others: the weights stay positive
    # (the overlap-add divides by them)
    ws = plan(1000, 300, 80)
    total = torch.zeros(1000)
    for w in ws:
        total[w.start:w.stop] += crossfade(w)
    assert ws[2].stop > ws[4].start and (total > 0.5).all()
    joined = OverlapAdd(2, 1000)
    for w in ws:
        joined.add(w, torch.full((2, w.width), 0.25))
    assert torch.allclose(joined.result(), torch.full((2, 1000), 0.25))  # a constant stays the constant


def test_codec_windows_follow_the_model(pipe):
    w = pipe.codec.window_latent_frames
    assert len(pipe.codec.latent_windows(w)) == 1 and len(pipe.codec.latent_windows(w // 2)) == 1
    ws = pipe.codec.latent_windows(3 * w)
    overlap = round(pipe.config.sampling.window_overlap_seconds * SR / 160 / pipe.codec.vae_factor)
    assert ws[1].start == w - overlap and ws[-1].start == 2 * w
    assert pipe.codec.latent_frames(16000) * pipe.codec.vae_factor == pipe.codec.mel_frames(16000) >= 100


def test_long_generation_continues_across_windows(pipe, monkeypatch):
    calls = []
    real = sampling.denoise

    def spy(model_fn, x, scheduler, options, **kw):
        out = real(model_fn, x, scheduler, options, **kw)
        calls.append((kw["known"], out.clone()))
        return out

    monkeypatch.setattr(sampling, "denoise", spy)
    seconds = 1.6 * pipe.config.audio.segment_seconds
    out = pipe.generate(duration=seconds, steps=2, seed=0)
    assert len(out.mix) == round(seconds * SR) and out.info["windows"] == 2 and len(calls) == 2
    (k0, z0), (k1, _) = calls
    assert k0 is None
    x0, mask = k1
    frames = pipe.codec.latent_frames(len(out.mix))
    w = pipe.codec.window_latent_frames
    overlap = 2 * w - frames  # window 0 is [0, W), window 1 is [frames - W, frames)
    assert [v.start for v in pipe.codec.latent_windows(frames)] == [0, frames - w] and overlap > 0
    assert torch.equal(x0[..., :overlap, :], z0[..., -overlap:, :])
    assert mask[..., :overlap, :].eq(1).all() and mask[..., overlap:, :].eq(0).all()


def test_long_arrangement_keeps_given_stems_exact(pipe):
    seconds = 1.3 * pipe.config.audio.segment_seconds
    stems = synth_stems(seconds)
    out = pipe.arrange({"bass": stems["bass"], "drums": stems["drums"]}, ["piano"], sample_rate=SR, steps=2, seed=0)
    assert out.info["windows"] == 2
    assert np.array_equal(out.stems["bass"], stems["bass"].astype(np.float32)) and len(out.stems["piano"]) == len(stems["bass"])
