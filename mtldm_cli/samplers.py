"""Samplers as small pure functions over tensors (k-diffusion style).

``model_fn(x, t) -> eps`` is any noise predictor; the schedule is a tensor of cumulative alphas and
the timesteps to visit (from a diffusers scheduler); ``callback(info)`` reports each step.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[dict], None]]


def cfg_model_fn(unet, cond: torch.Tensor | None, uncond: torch.Tensor | None, scale: float) -> ModelFn:
    """Classifier-free guidance ``e_u + s (e_c - e_u)`` with both passes in one batched forward.

    With ``scale == 1`` (or no unconditional embedding) only the conditional pass runs.
    """

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.expand(x.shape[0]) if t.ndim == 0 else t
        if cond is None or uncond is None or scale == 1.0:
            return unet(x, tt, cond)
        e_u, e_c = unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([uncond, cond])).chunk(2)
        return e_u + scale * (e_c - e_u)

    return fn


def q_sample(x0: torch.Tensor, alpha_bar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion: ``x_t = sqrt(a) x0 + sqrt(1 - a) eps``."""
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def sample_ddim(
    model_fn: ModelFn,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    eta: float = 0.0,
    final_alpha: float | None = None,
    generator: torch.Generator | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """DDIM (Song et al.) from pure noise ``x`` down the descending ``timesteps``.

    ``eta`` = 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling. ``known = (x0, mask)``
    imputes the masked parts at every step with their forward-noised version at the current noise
    level (MT-MusicLDM's arrangement): ``x = mask * q_sample(x0, t) + (1 - mask) * x``.
    """
    ac = alphas_cumprod.to(x.device, torch.float64)
    final = ac[0] if final_alpha is None else torch.tensor(final_alpha, dtype=torch.float64, device=x.device)

    def noise_like(v):
        return torch.randn(v.shape, generator=generator, dtype=v.dtype, device="cpu").to(v.device)

    n = len(timesteps)
    for i, t in enumerate(timesteps.tolist()):
        a_t = ac[t]
        a_prev = ac[int(timesteps[i + 1])] if i + 1 < n else final
        if known is not None:
            x0_known, mask = known
            x = mask * q_sample(x0_known, a_t.to(x.dtype), noise_like(x)) + (1 - mask) * x
        eps = model_fn(x, torch.tensor(t, device=x.device))
        x0 = (x - (1 - a_t).sqrt().to(x.dtype) * eps) / a_t.sqrt().to(x.dtype)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt().to(x.dtype) * eps
        x = a_prev.sqrt().to(x.dtype) * x0 + direction
        if eta > 0:
            x = x + sigma.to(x.dtype) * noise_like(x)
        if callback is not None:
            callback({"i": i, "total": n, "t": t, "x": x, "denoised": x0})
    if known is not None:
        x0_known, mask = known
        x = mask * x0_known + (1 - mask) * x
    return x


def sample_scheduler(
    model_fn: ModelFn,
    x: torch.Tensor,
    scheduler,
    *,
    generator: torch.Generator | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Any diffusers scheduler (``set_timesteps`` already called) driven by ``model_fn``.

    Imputation of ``known = (x0, mask)`` is as in :func:`sample_ddim`, using the scheduler's own
    forward process at the current timestep.
    """

    def noise_like(v):
        return torch.randn(v.shape, generator=generator, dtype=v.dtype, device="cpu").to(v.device)

    x = x * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        if known is not None:
            x0_known, mask = known
            noisy = scheduler.add_noise(x0_known, noise_like(x), t.reshape(1))
            x = mask * noisy + (1 - mask) * x
        eps = model_fn(scheduler.scale_model_input(x, t), t.to(x.device))
        out = scheduler.step(eps, t, x, generator=generator)
        x = out.prev_sample
        if callback is not None:
            callback({"i": i, "total": n, "t": int(t), "x": x, "denoised": getattr(out, "pred_original_sample", None)})
    if known is not None:
        x0_known, mask = known
        x = mask * x0_known + (1 - mask) * x
    return x
