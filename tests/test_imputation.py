"""Arrangement's imputation, checked at every step of every sampler: the given stems fed to the model
are the given latents forward-noised to the current level, whatever the model predicts, and the
result keeps them exactly. A sampler that skips the imputation at any step fails here."""

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
