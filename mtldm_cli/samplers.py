"""Samplers as small pure functions over tensors (k-diffusion style).

``model_fn(x, t) -> eps`` is any noise predictor; the schedule is a tensor of cumulative alphas and
the timesteps to visit (from a diffusers scheduler); ``callback(info)`` reports each step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[dict], None]]


def training_scheduler(**overrides):
    """MT-MusicLDM's training schedule as a diffusers DDIMScheduler: 1000 scaled-linear betas
    0.0015 -> 0.0195, epsilon objective; timesteps and the last step as LDM's DDIM takes them."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{
        "num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "scaled_linear",
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
    } | overrides)


def cfg_model_fn(unet, cond: torch.Tensor | None, uncond: torch.Tensor | None, scale: float,
                 given: tuple[torch.Tensor, torch.Tensor] | None = None, given_scale: float = 1.0) -> ModelFn:
    """Classifier-free guidance ``e_u + s (e_c - e_u)`` with every pass in one batched forward.

    With ``scale == 1`` (or no unconditional embedding) only the conditional pass runs. ``given``
    (known latents and mask) goes to an arrangement-trained UNet, in every pass. ``given_scale`` also
    guides by the given stems, as InstructPix2Pix guides by its image: the same forward with nothing
    given is the unconditional pass, ``e_0 + g (e_given - e_0) [+ s (e_c - e_given,u)]``, so that the
    new stems answer the given ones more than the seed (training drops the given stems half the time).
    """
    text = cond is not None and uncond is not None and scale != 1.0
    by_given = given is not None and given_scale != 1.0
    passes = [(cond, True)]  # (condition, whether the given stems are given), the conditional pass last
    if text:
        passes.insert(0, (uncond, True))
    if by_given:
        passes.insert(0, (passes[0][0], False))

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], len(passes)
        tt = t.expand(b) if t.ndim == 0 else t
        c = None if cond is None else torch.cat([v.expand(b, *v.shape[1:]) for v, _ in passes])  # type: ignore[union-attr]
        extra: dict = {}
        if given is not None:
            x0, mask = (v.expand(b, *v.shape[1:]) for v in given)
            extra["given"] = (torch.cat([x0] * n), torch.cat([mask if on else torch.zeros_like(mask) for _, on in passes]))
        eps = unet(torch.cat([x] * n), torch.cat([tt] * n), c, **extra).chunk(n)
        out, i = eps[0], 0
        if by_given:
            out, i = out + given_scale * (eps[1] - eps[0]), 1
        return out + scale * (eps[i + 1] - eps[i]) if text else out

    return fn


def reconstruction_guided(model_fn: ModelFn, alphas_cumprod: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor],
                          weight: float) -> ModelFn:
    """Reconstruction guidance (Ho et al., Video Diffusion Models): the unknown parts' clean estimate
    moves against the gradient of the known parts' reconstruction error,
    ``x0_u -= weight * sqrt(a_t) / 2 * grad_{x_u} |x0_known - x0_hat_known(x)|^2``, and the noise
    prediction is made consistent with it. Costs a backward pass through the model per step.
    """
    x0_known, mask = known

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas_cumprod.to(x.device, torch.float64)[t.long()].to(x.dtype)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            eps = model_fn(xg, t)
            x0 = (xg - (1 - a).sqrt() * eps) / a.sqrt()
            error = ((x0 - x0_known) * mask).pow(2).sum()
            (grad,) = torch.autograd.grad(error, xg)
        x0 = x0.detach() - weight * a.sqrt() / 2 * grad * (1 - mask)
        return ((x - a.sqrt() * x0) / (1 - a).sqrt()).detach()

    return fn


def q_sample(x0: torch.Tensor, alpha_bar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion: ``x_t = sqrt(a) x0 + sqrt(1 - a) eps``."""
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


Generators = torch.Generator | list[torch.Generator] | None


def noise_like(v: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Noise drawn on the CPU, then moved: a seed gives the same noise on every device. A list of
    generators draws each batch item from its own, so an item of a batch is what its seed gives alone."""
    if isinstance(generator, list):
        return torch.cat([noise_like(v[k:k + 1], g) for k, g in enumerate(generator)])
    return torch.randn(v.shape, generator=generator, dtype=v.dtype, device="cpu").to(v.device)


def _impute(x: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Replace the masked parts of ``x`` with ``values``."""
    return mask * values + (1 - mask) * x


def sample_ddim(
    model_fn: ModelFn,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    eta: float = 0.0,
    final_alpha: float | None = None,
    generator: Generators = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    resample: int = 1,
    callback: Callback = None,
) -> torch.Tensor:
    """DDIM (Song et al.) from pure noise ``x`` down the descending ``timesteps``.

    ``eta`` = 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling. ``known = (x0, mask)``
    imputes the masked parts at every step with their forward-noised version at the current noise
    level (MT-MusicLDM's arrangement): ``x = mask * q_sample(x0, t) + (1 - mask) * x``.
    ``resample`` > 1 is RePaint (Lugmayr et al.): each step is made that many times, the result
    re-noised back to the step's level in between, so the unknown parts can settle to the known.
    """
    ac = alphas_cumprod.to(x.device, torch.float64)
    final = ac[0] if final_alpha is None else torch.tensor(final_alpha, dtype=torch.float64, device=x.device)
    n = len(timesteps)
    for i, t in enumerate(timesteps.tolist()):
        a_t = ac[t]
        a_prev = ac[int(timesteps[i + 1])] if i + 1 < n else final
        for r in range(resample if known is not None else 1):
            if r:  # RePaint: back to this step's noise level, q(x_t | x_prev)
                x = (a_t / a_prev).sqrt().to(x.dtype) * x + (1 - a_t / a_prev).sqrt().to(x.dtype) * noise_like(x, generator)
            if known is not None:
                x = _impute(x, known[1], q_sample(known[0], a_t.to(x.dtype), noise_like(x, generator)))
            eps = model_fn(x, torch.tensor(t, device=x.device))
            x0 = (x - (1 - a_t).sqrt().to(x.dtype) * eps) / a_t.sqrt().to(x.dtype)
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
            direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt().to(x.dtype) * eps
            x = a_prev.sqrt().to(x.dtype) * x0 + direction
            if eta > 0:
                x = x + sigma.to(x.dtype) * noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "total": n, "t": t, "x": x, "denoised": x0})
    return x if known is None else _impute(x, known[1], known[0])


def sample_scheduler(
    model_fn: ModelFn,
    x: torch.Tensor,
    scheduler,
    *,
    generator: Generators = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Any diffusers scheduler (``set_timesteps`` already called) driven by ``model_fn``.

    Imputation of ``known = (x0, mask)`` is as in :func:`sample_ddim`, using the scheduler's own
    forward process at the current timestep.
    """
    x = x * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        if known is not None:
            x = _impute(x, known[1], scheduler.add_noise(known[0], noise_like(x, generator), t.reshape(1)))
        eps = model_fn(scheduler.scale_model_input(x, t), t.to(x.device))
        out = scheduler.step(eps, t, x, generator=generator)
        x = out.prev_sample
        if callback is not None:
            callback({"i": i, "total": n, "t": int(t), "x": x, "denoised": getattr(out, "pred_original_sample", None)})
    return x if known is None else _impute(x, known[1], known[0])
