"""MSDM's separation samplers (Mariani et al., 2023), adapted to DDIM-trained models in latent space.

The sampler integrates the probability-flow ODE of a variance-exploding view of the model with Euler
steps and "churn" noise, over a Karras sigma schedule. A DDPM epsilon model is used as the score:
``t = (T - 1) * sigma / sigma_max`` and input ``x / sqrt(sigma^2 + 1)`` (the published latent setup).
The mixture constraint in latent space is ``m = mean of the stem latents``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .samplers import Callback, ModelFn, noise_like

ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]


def karras_sigmas(n: int, sigma_min: float = 1e-4, sigma_max: float = 1.0, rho: float = 7.0) -> torch.Tensor:
    """``n`` sigmas from ``sigma_max`` down to ``sigma_min``, then a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def eps_score(model_fn: ModelFn, sigma_max: float, num_train_timesteps: int = 1000) -> ScoreFn:
    """Wrap an epsilon model as MSDM's ``(x - D(x)) / sigma`` term."""

    def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = torch.tensor((num_train_timesteps - 1) * min(sigma / sigma_max, 1.0), device=x.device)
        return model_fn(x / math.sqrt(sigma**2 + 1), t)

    return score


def dirac_differential(x, sigma, score_fn: ScoreFn, mixture, source: int = -1):
    """Pin stem ``source`` to ``S * m - sum(others)``; the others follow ``eps_i - eps_source``."""
    x = x.clone()
    j = source % x.shape[1]
    others = x.sum(1, keepdim=True) - x[:, j : j + 1]
    x[:, j : j + 1] = x.shape[1] * mixture - others
    eps = score_fn(x, sigma)
    return eps - eps[:, j : j + 1], x


def gaussian_differential(x, sigma, score_fn: ScoreFn, mixture, gamma_coeff: float = 0.75):
    """Score plus the gradient of a Gaussian likelihood ``N(m; mean(x), gamma^2)``, gamma = c * sigma."""
    return _gaussian_step(score_fn(x, sigma), x, sigma, mixture, gamma_coeff), x


def _gaussian_step(eps, x, sigma, mixture, gamma_coeff):
    gamma = gamma_coeff * sigma
    return eps - sigma / (2 * gamma**2) * (mixture - x.mean(1, keepdim=True))


def consistency_differential(x, sigma, score_fn: ScoreFn, mixture, *, decode_mel: Callable, mixture_mel: torch.Tensor,
                             guidance: float = 1.0, gamma_coeff: float = 0.75):
    """Ours: MSDM's Gaussian step plus the gradient of a mixture-consistency loss measured where the
    sum is meant, in the mel domain through the decoder (posterior-sampling style, as DPS).

    The denoised estimate ``x0 = x - sigma * eps`` of each stem is decoded to a log-mel; the stems'
    mel powers are summed (independent sources add in power) and compared with the mixture's log-mel.
    The step descends that loss's gradient, normalised by the residual's norm (DPS's step size), so
    ``guidance`` is a unitless strength.
    """
    eps = score_fn(x, sigma)
    d = _gaussian_step(eps, x, sigma, mixture, gamma_coeff)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        mel = decode_mel(xg - sigma * eps.detach())  # [B, S, T, M] log-mel per stem
        residual = 0.5 * torch.logsumexp(2 * mel, dim=1) - mixture_mel
        norms = residual.pow(2).flatten(1).sum(1).sqrt()  # one per batch item: each its own step size
        (grad,) = torch.autograd.grad(norms.sum(), xg)
    return d + guidance * grad, x


DIFFERENTIALS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"dirac": dirac_differential, "gaussian": gaussian_differential,
                 "consistency": consistency_differential}


def sample_separation(
    differential: Callable,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    s_churn: float = 20.0,
    num_resamples: int = 2,
    generator: torch.Generator | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Euler with churn and resampling, as MSDM's ``separate_mixture``.

    ``differential(x, sigma) -> (d, x)`` returns the ODE derivative and the (possibly projected) state.
    """
    steps = len(sigmas) - 1
    x = float(sigmas[0]) * noise
    gamma = min(s_churn / steps, 2**0.5 - 1) if steps else 0.0
    for i in range(steps):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        for r in range(num_resamples):
            sigma_hat = sigma * (gamma + 1)
            x = x + noise_like(x, generator) * math.sqrt(sigma_hat**2 - sigma**2)
            d, x = differential(x, sigma_hat)
            x = x + d * (sigma_next - sigma_hat)
            if r < num_resamples - 1:
                x = x + math.sqrt(sigma**2 - sigma_next**2) * noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "total": steps, "sigma": sigma, "x": x})
    return x


def separation_differential(method: str, score_fn: ScoreFn, mixture: torch.Tensor, **kwargs) -> Callable:
    """Bind a named method to a score function and a mixture latent ``[B, 1, ...]``."""
    fn = DIFFERENTIALS[method]
    return lambda x, sigma: fn(x, sigma, score_fn, mixture, **kwargs)


def wiener_filter(estimates: torch.Tensor, mixture: torch.Tensor, *, n_fft: int = 2048, hop: int = 512,
                  power: float = 2.0, eps: float = 1e-10) -> torch.Tensor:
    """Mixture-consistent stems: soft masks ``|E_i|^p / sum_j |E_j|^p`` from the estimates' STFTs,
    applied to the mixture's STFT (open-unmix/demucs post-filters, single pass).

    ``[S, N]`` estimates and an ``[N]`` mixture -> ``[S, N]`` stems that carry the mixture's phase
    and sum back to it (where every estimate is silent, the mixture is shared equally).
    """
    window = torch.hann_window(n_fft, dtype=torch.float32, device=mixture.device)

    def stft(x):
        return torch.stft(x.float(), n_fft, hop, window=window, return_complex=True)

    weights = stft(estimates).abs() ** power + eps
    masks = weights / weights.sum(0, keepdim=True)
    stems = torch.istft(masks * stft(mixture)[None], n_fft, hop, window=window, length=mixture.shape[-1])
    return stems.to(estimates.dtype)


__all__ = [
    "karras_sigmas", "eps_score", "dirac_differential", "gaussian_differential", "sample_separation",
    "separation_differential", "consistency_differential", "wiener_filter", "DIFFERENTIALS"
]
