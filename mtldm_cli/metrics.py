"""Separation metrics with MSDM's evaluation protocol (Mariani et al., 2023)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .audio import is_silent


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
    n = min(len(v) for v in [*est.values(), *ref.values()])
    if mix is not None:
        n = min(n, len(mix))
    ref = {s: np.asarray(ref[s][:n], np.float64) for s in stems}
    est = {s: np.asarray(est[s][:n], np.float64) for s in stems}
    mix = np.sum(list(ref.values()), axis=0) if mix is None else np.asarray(mix[:n], np.float64)
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    count = max(0, math.ceil((n - (win - hop)) / hop))
    scores: dict[str, list[float]] = {s: [] for s in stems}
    sdrs: dict[str, list[float]] = {s: [] for s in stems}
    for i in range(count):
        sl = slice(i * hop, i * hop + win)
        if filter_single_source and sum(not is_silent(ref[s][sl]) for s in stems) <= 1:
            continue
        for s in stems:
            sdr = si_sdr(est[s][sl], ref[s][sl])
            sdrs[s].append(sdr)
            scores[s].append(sdr - si_sdr(mix[sl], ref[s][sl]))
    return {
        s: {
            "si_sdri": float(np.mean(scores[s])) if scores[s] else float("nan"),
            "si_sdr_windows": float(np.mean(sdrs[s])) if sdrs[s] else float("nan"),
            "si_sdr": si_sdr(est[s], ref[s]),
            "windows": len(scores[s]),
        }
        for s in stems
    }
