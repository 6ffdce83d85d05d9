"""Arrangement's imputation, checked at every step of every sampler: the given stems fed to the model
are the given latents forward-noised to the current level, whatever the model predicts, and the
result keeps them exactly. A sampler that skips the imputation at any step fails here."""

import json

import numpy as np
import pytest
import torch

from mtldm_cli.samplers import sample_ddim, sample_scheduler, training_scheduler
from mtldm_cli.sampling import dpm_solver

from .conftest import synth_stems

MASK = torch.tensor([1.0, 0, 1.0, 0]).view(1, 4, 1, 1, 1)
GIVEN = [0, 2]


def _run(name: str, model_fn, x0: torch.Tensor, steps: int = 6):
    """Sample with ``known=(x0, MASK)``; returns the output and the (t, input) of every model call."""
    calls = []

    def fn(x, t):
        calls.append((int(t), x.clone()))
        return model_fn(x, t)

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    if name.startswith("ddim"):
        s = training_scheduler()
        s.set_timesteps(steps)
        out = sample_ddim(fn, noise, s.alphas_cumprod, s.timesteps, eta=float(name[-1]), generator=g,
                          final_alpha=float(s.final_alpha_cumprod), known=(x0, MASK))
    else:
        s = dpm_solver(training_scheduler().config)
        s.set_timesteps(steps)
        out = sample_scheduler(fn, noise, s, generator=g, known=(x0, MASK))
    return out, calls


def _residual(x: torch.Tensor, x0: torch.Tensor, t: int) -> torch.Tensor:
    """The noise that makes ``x`` the forward-noised ``x0`` at ``t``."""
    a = training_scheduler().alphas_cumprod[t]
    return (x - a.sqrt() * x0) / (1 - a).sqrt()


@pytest.mark.parametrize("name", ["ddim-eta0", "ddim-eta1", "dpm++"])
def test_every_step_feeds_the_noised_given_stems_whatever_the_model_says(name):
    x0 = torch.randn(1, 4, 2, 16, 8, generator=torch.Generator().manual_seed(2))
    out_a, calls_a = _run(name, lambda x, t: torch.zeros_like(x), x0)
    out_b, calls_b = _run(name, lambda x, t: 3.0 * torch.ones_like(x), x0)
    assert len(calls_a) == len(calls_b) == 6
    for i, ((t, xa), (_, xb)) in enumerate(zip(calls_a, calls_b)):
        assert torch.equal(xa[:, GIVEN], xb[:, GIVEN]), t  # imputed: no trace of the model's output
        r = _residual(xa[:, GIVEN], x0[:, GIVEN], t)
        assert abs(float(r.mean())) < 0.2 and 0.8 < float(r.std()) < 1.2, t  # unit noise, not the raw latent
        assert i == 0 or not torch.equal(xa[:, [1, 3]], xb[:, [1, 3]])  # the wanted stems follow the model
    for out in (out_a, out_b):
        assert torch.equal(out[:, GIVEN], x0[:, GIVEN])


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_arrange_imputes_the_given_latents_at_every_unet_call(pipe, sampler, monkeypatch):
    stems = synth_stems(seconds=0.5)
    given = {s: stems[s].astype(np.float32) for s in ("bass", "guitar")}
    stacked = torch.zeros(1, 4, 8000)
    for s, w in given.items():
        stacked[0, pipe.stems.index(s)] = torch.from_numpy(w)
    x0 = pipe.codec.encode(stacked)
    seen = []
    real = pipe.unet.forward

    def spy(x, t, cond=None):
        seen.append((int(t.reshape(-1)[0]), x.clone()))
        return real(x, t, cond)

    monkeypatch.setattr(pipe.unet, "forward", spy)
    pipe.arrange(given, ["piano"], steps=8, seed=0, sampler=sampler, eta=1.0)
    assert len(seen) == 8
    for t, x in seen:
        r = _residual(x[:, [0, 2]], x0[:, [0, 2]], t)
        assert 0.7 < float(r.std()) < 1.3, (sampler, t)


# ----- stronger arrangement: RePaint resampling and reconstruction guidance --------------------------

def test_repaint_makes_each_step_n_times_and_keeps_the_given_stems():
    x0 = torch.randn(1, 4, 2, 16, 8, generator=torch.Generator().manual_seed(2))
    s = training_scheduler()
    s.set_timesteps(5)
    runs = {}
    for r in (1, 3):
        calls = []

        def fn(x, t, calls=calls):
            calls.append(int(t))
            return 0.5 * x

        out = sample_ddim(fn, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), s.alphas_cumprod,
                          s.timesteps, eta=1.0, final_alpha=float(s.final_alpha_cumprod),
                          generator=torch.Generator().manual_seed(0), known=(x0, MASK), resample=r)
        assert calls == [t for t in s.timesteps.tolist() for _ in range(r)]
        assert torch.equal(out[:, GIVEN], x0[:, GIVEN])
        runs[r] = out
    assert not torch.equal(runs[1][:, [1, 3]], runs[3][:, [1, 3]])


def test_reconstruction_guidance_pulls_the_unknown_stems_toward_the_given_ones():
    """A toy model whose clean estimate of every stem is the stems' mean: the given stems' estimate
    can only match them if the unknown stems move, and guidance moves them that way."""
    from mtldm_cli.samplers import reconstruction_guided

    alphas = training_scheduler().alphas_cumprod
    t = torch.tensor(500)
    a = alphas[500]

    def model_fn(x, t):
        x0 = x.mean(1, keepdim=True).expand_as(x) / a.sqrt()
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    x0_known = torch.ones(1, 4, 1, 4, 4)
    x = torch.zeros(1, 4, 1, 4, 4)

    def given_error(eps):
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return float(((x0 - x0_known) * MASK).pow(2).sum())

    plain = model_fn(x, t)
    assert torch.equal(reconstruction_guided(model_fn, alphas, (x0_known, MASK), 0.0)(x, t), plain)
    guided = reconstruction_guided(model_fn, alphas, (x0_known, MASK), 1.0)(x, t)
    assert torch.equal(guided[:, GIVEN], plain[:, GIVEN])  # the given stems' prediction is untouched
    x0_unknown = ((x - (1 - a).sqrt() * guided) / a.sqrt())[:, [1, 3]]
    assert float(x0_unknown.mean()) > 0.1  # moved toward what makes the mean match the given ones
    moved = x.clone()
    moved[:, [1, 3]] = a.sqrt() * x0_unknown
    assert given_error(model_fn(moved, t)) < given_error(plain)


def test_arrange_options_are_refused_where_they_cannot_work(pipe):
    from mtldm_cli.errors import InputError

    with pytest.raises(InputError, match="resample=3: RePaint resampling needs the ddim sampler"):
        pipe.sampling_options("arrange", resample=3, sampler="dpm++")
    with pytest.raises(InputError, match="reconstruction=1.0 steers an arrangement: only arrange takes it"):
        pipe.sampling_options("generate", reconstruction=1.0)
    with pytest.raises(InputError, match="resample=2 and given_guidance=3.0 steer an arrangement: only arrange takes them"):
        pipe.sampling_options("condition", resample=2, given_guidance=3.0, reconstruction=0.0)
    with pytest.raises(InputError, match="given_guidance=2.0: guidance by the given stems needs a UNet trained for arr"):
        pipe.arrange(given={"bass": synth_stems(0.5)["bass"]}, want=["piano"], given_guidance=2.0, steps=1)
    opts = pipe.sampling_options("arrange", resample=2, sampler="ddim", reconstruction=0.5)
    assert (opts.resample, opts.reconstruction) == (2, 0.5) and opts.record()["resample"] == 2


def test_arrange_with_repaint_and_reconstruction_guidance_end_to_end(cli, tmp_path):
    import soundfile as sf

    stems = synth_stems(seconds=0.5)
    for s in ("bass", "drums"):
        sf.write(tmp_path / f"{s}.wav", stems[s], 16000)
    runs = {}
    for name, extra in (("plain", []), ("strong", ["--resample", "2", "--reconstruction", "2.0"])):
        r = cli("arrange", "--model", "tiny-random", "--given", tmp_path / "bass.wav", tmp_path / "drums.wav", "--want", "piano",
                "--sampler", "ddim", "--steps", "4", "--seed", "0", "--out", tmp_path / name, "--json", "-q", *extra)
        assert r.exit_code == 0, r.stderr
        runs[name] = json.loads((tmp_path / name / "run.json").read_text())
        wav, _ = sf.read(tmp_path / name / "bass.wav")
        assert np.abs(wav - stems["bass"][: len(wav)]).max() < 1e-4  # given stems come back as given
    assert runs["strong"]["options"]["resample"] == 2 and runs["strong"]["options"]["reconstruction"] == 2.0
    a, _ = sf.read(tmp_path / "plain" / "piano.wav")
    b, _ = sf.read(tmp_path / "strong" / "piano.wav")
    assert not np.array_equal(a, b)
    r = cli("generate", "--model", "tiny-random", "--out", tmp_path / "g", "--resample", "2")
    assert r.exit_code == 2  # generate has no such flag
