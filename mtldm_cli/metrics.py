"""Metrics: separation with MSDM's protocol (Mariani et al., 2023), audio round-trip distances,
and coherence and distribution measures for generated stems."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .audio import common_length, is_silent


def si_sdr(est: np.ndarray, ref: np.ndarray, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB, as MSDM computes it (no mean removal, eps-stabilised)."""
    est, ref = np.asarray(est, np.float64), np.asarray(ref, np.float64)
    alpha = (np.dot(est, ref) + eps) / (np.dot(ref, ref) + eps)
    target = alpha * ref
    return float(10 * np.log10((np.sum(target**2) + eps) / (np.sum((target - est) ** 2) + eps)))


def evaluate_separation(
    est: Mapping[str, np.ndarray],
    ref: Mapping[str, np.ndarray],
    sample_rate: int,
    mix: np.ndarray | None = None,
    *,
    window_s: float = 4.0,
    hop_s: float = 2.0,
    filter_single_source: bool = True,
) -> dict[str, dict]:
    """Per stem: SI-SDRi averaged over windows (MSDM protocol) and whole-signal SI-SDR.

    Windows of ``window_s`` with hop ``hop_s``; a window counts only if at least two reference
    stems are active in it. ``mix`` defaults to the sum of the references.
    """
    stems = list(ref)
    lengths = {f"estimate {s}": len(v) for s, v in est.items()} | {f"reference {s}": len(v) for s, v in ref.items()}
    n = common_length(lengths | ({"mix": len(mix)} if mix is not None else {}), sample_rate, "estimates and references")
    ref = {s: np.asarray(ref[s][:n], np.float64) for s in stems}
    est = {s: np.asarray(est[s][:n], np.float64) for s in stems}
    mix = np.sum(list(ref.values()), axis=0) if mix is None else np.asarray(mix[:n], np.float64)
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    count = max(0, math.ceil((n - (win - hop)) / hop))
    scores: dict[str, list[float]] = {s: [] for s in stems}
    sdrs: dict[str, list[float]] = {s: [] for s in stems}
    active: dict[str, list[float]] = {s: [] for s in stems}
    for i in range(count):
        sl = slice(i * hop, i * hop + win)
        on = {s: not is_silent(ref[s][sl]) for s in stems}
        if filter_single_source and sum(on.values()) <= 1:
            continue
        for s in stems:
            sdr = si_sdr(est[s][sl], ref[s][sl])
            sdrs[s].append(sdr)
            scores[s].append(sdr - si_sdr(mix[sl], ref[s][sl]))
            if on[s]:
                active[s].append(scores[s][-1])
    return {
        s: {
            "si_sdri": _mean(scores[s]),
            "si_sdr_windows": _mean(sdrs[s]),
            "si_sdr": si_sdr(est[s], ref[s]),
            "windows": len(scores[s]),
            # MSDM keeps windows where this stem is silent (if two others sound); there SI-SDR only
            # compares loudness (est vs mix against eps). The same mean over windows where it sounds:
            "si_sdri_active": _mean(active[s]),
            "windows_active": len(active[s]),
        }
        for s in stems
    }


def mixture_mismatch(mix: np.ndarray, ref: Mapping[str, np.ndarray], tolerance_db: float = 30.0) -> float | None:
    """SI-SDR (dB) of ``mix`` against the sum of the references when it is under ``tolerance_db``,
    else None. A mixture that is not the sum of its stems (another take, a mastered mix, stems
    missing) changes every SI-SDRi, which scores against it; a gain alone does not (scale-invariant)."""
    n = min(len(mix), *(len(r) for r in ref.values()))
    total = np.sum([np.asarray(r[:n], np.float64) for r in ref.values()], axis=0)
    sdr = si_sdr(np.asarray(mix[:n], np.float64), total)
    return sdr if sdr < tolerance_db else None


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# ----- audio quality (vocoder and VAE round trips) ------------------------------------------------

MRSTFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop), Yamamoto et al. 2020


def mrstft_distance(est, ref, resolutions=MRSTFT_RESOLUTIONS, eps: float = 1e-7):
    """Multi-resolution STFT distance (spectral convergence + log-magnitude L1, averaged over
    resolutions), Parallel WaveGAN's loss: lower is closer. Differentiable; ``[..., N]`` tensors."""
    terms = _mrstft_terms(est, ref, resolutions, eps)
    return sum(sc.mean() + log_l1 for sc, log_l1 in terms) / len(terms)


def spectral_convergence(est, ref, resolutions=MRSTFT_RESOLUTIONS, eps: float = 1e-7) -> float:
    """The spectral-convergence half of :func:`mrstft_distance` alone, ``|R - E| / |R|`` averaged over
    resolutions: it weighs the loud bins, where the log-magnitude half weighs every bin alike."""
    terms = _mrstft_terms(est, ref, resolutions, eps)
    return float(sum(sc.mean() for sc, _ in terms) / len(terms))


def _mrstft_terms(est, ref, resolutions, eps):
    """Per resolution: spectral convergence per signal, and the mean log-magnitude L1."""
    import torch

    terms = []
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=est.device)

        def mag(x, n_fft=n_fft, hop=hop, window=window):
            spec = torch.stft(x.reshape(-1, x.shape[-1]).float(), n_fft, hop, window=window, return_complex=True)
            return spec.abs().clamp_min(eps)

        e, r = mag(est), mag(ref)
        sc = torch.linalg.norm(r - e, dim=(-2, -1)) / torch.linalg.norm(r, dim=(-2, -1)).clamp_min(eps)
        terms.append((sc, (e.log() - r.log()).abs().mean()))
    return terms


# ----- generation: stem coherence and distribution distance ----------------------------------------

def onset_envelope(wav: np.ndarray, sample_rate: int, hop: int = 256, n_fft: int = 1024) -> np.ndarray:
    """Spectral flux of the log-magnitude STFT (half-wave rectified, summed over bins)."""
    spec = _stft_mag(wav, n_fft, hop)
    flux = np.maximum(np.diff(np.log1p(100 * spec), axis=0), 0).sum(axis=1)
    return flux - flux.mean()


def onset_agreement(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Pearson correlation of two signals' onset envelopes at zero lag: do they hit together?"""
    x, y = onset_envelope(a, sample_rate), onset_envelope(b, sample_rate)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    den = np.linalg.norm(x) * np.linalg.norm(y)
    return float(np.dot(x, y) / den) if den > 0 else 0.0


def chroma(wav: np.ndarray, sample_rate: int, n_fft: int = 4096, hop: int = 1024,
           fmin: float = 55.0, fmax: float = 4000.0) -> np.ndarray:
    """Time-averaged 12-bin pitch-class profile (C=0) of the STFT energy between fmin and fmax."""
    spec = _stft_mag(wav, n_fft, hop) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    keep = (freqs >= fmin) & (freqs <= fmax)
    pitch_class = np.round(12 * np.log2(freqs[keep] / 440.0) + 9).astype(int) % 12
    profile = np.bincount(pitch_class, weights=spec[:, keep].sum(axis=0), minlength=12)
    return profile / max(profile.sum(), 1e-12)


def chroma_agreement(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Cosine similarity of two signals' pitch-class profiles: are they in the same key?"""
    x, y = chroma(a, sample_rate), chroma(b, sample_rate)
    den = np.linalg.norm(x) * np.linalg.norm(y)
    return float(np.dot(x, y) / den) if den > 0 else 0.0


# Krumhansl-Kessler key profiles (probe-tone ratings), tonic first.
KEY_PROFILES = {
    "major": np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    "minor": np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}


def estimate_key(wav: np.ndarray, sample_rate: int) -> tuple[int, str]:
    """(tonic pitch class, mode) whose Krumhansl-Kessler profile correlates best with the chroma."""
    profile = chroma(wav, sample_rate)
    best, key = -np.inf, (0, "major")
    for mode, template in KEY_PROFILES.items():
        for tonic in range(12):
            r = np.corrcoef(profile, np.roll(template, tonic))[0, 1]
            if r > best:
                best, key = r, (tonic, mode)
    return key


def key_agreement(stems: list[np.ndarray], sample_rate: int) -> float:
    """Share of pairs of (pitched) stems whose estimated keys are the same: do they play in one key?"""
    keys = [estimate_key(w, sample_rate) for w in stems]
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
    return float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")


def onset_sharpness(wav: np.ndarray, sample_rate: int) -> float:
    """How peaked the onset envelope is: its top 2% over its mean (sharp attacks score high)."""
    flux = onset_envelope(wav, sample_rate)
    flux = flux - flux.min()
    mean = flux.mean()
    return float(np.quantile(flux, 0.98) / mean) if mean > 0 else 0.0


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings ``[N, D]`` (FAD's formula)."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root.real))


def _stft_mag(wav: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    wav = np.asarray(wav, np.float64)
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))
