"""The sampling loop of generate, condition and arrange: a named sampler over latent windows.

Each window after the first imputes its overlap with the previous window's result, exactly as
arrangement imputes a given stem, so the music continues across the border.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .options import SamplingOptions
from .samplers import Callback, Generators, ModelFn, noise_like, reconstruction_guided, sample_ddim, sample_scheduler
from .windows import Window

Known = tuple[torch.Tensor, torch.Tensor]  # (x0, mask): latents to impute, 1 where they are known


def dpm_solver(scheduler_config) -> Any:
    """DPM-Solver++ 2M with trailing timesteps, on the model's training schedule (the fast default)."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        scheduler_config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
        steps_offset=0, final_sigmas_type="zero")


def denoise(model_fn: ModelFn, x: torch.Tensor, scheduler, options: SamplingOptions, *,
            generator: Generators, known: Known | None = None, callback: Callback = None) -> torch.Tensor:
    """Run ``options.sampler`` for ``options.steps`` from the noise ``x`` on ``scheduler``'s schedule."""
    if options.sampler == "ddim":
        scheduler.set_timesteps(options.steps)
        return sample_ddim(model_fn, x, scheduler.alphas_cumprod, scheduler.timesteps, eta=options.eta,
                           final_alpha=float(scheduler.final_alpha_cumprod), generator=generator, known=known,
                           resample=options.resample, callback=callback)
    sched = dpm_solver(scheduler.config)
    sched.set_timesteps(options.steps, device=x.device)
    return sample_scheduler(model_fn, x, sched, generator=generator, known=known, callback=callback)


def sample_windows(model_for: Callable[[Known | None], ModelFn], shape: tuple[int, ...], windows: list[Window],
                   scheduler, options: SamplingOptions, *, generator: Generators, device: torch.device,
                   known: Known | None = None, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Latents of ``shape`` ``[B, S, C, latent_frames, F]``, sampled window by window.

    ``known`` holds full-length latents and a per-stem mask ``[B, S, 1, 1, 1]`` (arrangement).
    ``model_for(known)`` is the noise predictor of a window whose known latents and mask (the given
    stems, and the overlap with the previous window) are ``known``: most UNets ignore them (they are
    imputed), an arrangement-trained one takes them as input.
    ``callback`` sees each step with ``i``/``total`` counted over all windows and the ``window``.
    """
    z = torch.zeros(shape, device=device)
    steps = options.steps
    for w in windows:
        x = noise_like(torch.empty((*shape[:3], w.width, shape[4])), generator).to(device)
        x0 = torch.zeros_like(x)
        mask = torch.zeros(1, shape[1], 1, w.width, 1, device=device)
        if known is not None:
            x0 = known[0][..., w.start:w.stop, :].clone()
            mask = mask + known[1]
        if w.before:  # the overlap with the previous window is known
            x0[..., :w.before, :] = z[..., w.start:w.start + w.before, :]
            mask[..., :w.before, :] = 1.0
        window_known = (x0, mask) if mask.any() else None
        fn = model_for(window_known)
        if window_known is not None and options.reconstruction > 0:
            fn = reconstruction_guided(fn, scheduler.alphas_cumprod, window_known, options.reconstruction)
        z[..., w.start:w.stop, :] = denoise(fn, x, scheduler, options, generator=generator, known=window_known,
                                            callback=per_window(callback, w, len(windows), steps, "window"))
    return z


def per_window(callback: Callable[[dict], None] | None, window: Window, windows: int, steps: int,
               key: str) -> Callable[[dict], None] | None:
    """Report a window's steps as steps of the whole run (``i`` of ``total``), with its index as ``key``."""
    if callback is None:
        return None
    k = window.index
    return lambda info: callback(info | {"i": k * steps + info["i"], "total": windows * steps, key: k})
