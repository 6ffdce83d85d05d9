"""One rule for cutting long signals into overlapping windows, and two ways to join them.

Latent frames (encoding, decoding and sampling beyond the 10.24 s a model was trained on) and
samples (separation chunks) use the same plan: windows of one width, consecutive ones sharing at
least ``overlap`` units, the last one ending at the end. ``stitch`` joins by cutting each overlap
at its middle; ``crossfade`` gives the linear overlap-add weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """``[start, stop)`` of the signal; ``[keep_start, keep_stop)`` is what it contributes when each
    overlap is cut at its middle; ``before``/``after``: units shared with its neighbours."""

    index: int
    start: int
    stop: int
    keep_start: int
    keep_stop: int
    before: int
    after: int

    @property
    def width(self) -> int:
        return self.stop - self.start


def overlap_units(width: int, seconds: float, per_second: float) -> int:
    """``seconds`` of overlap in units of ``per_second``, at least 1 and at most half a window."""
    return min(width // 2, max(1, round(seconds * per_second)))


def plan(length: int, width: int, overlap: int) -> list[Window]:
    """Windows of ``width`` (or one of ``length``, when shorter) covering ``length`` units."""
    if length <= width:
        return [Window(0, 0, length, 0, length, 0, 0)]
    starts = [*range(0, length - width, width - overlap), length - width]
    stops = [a + width for a in starts]
    cuts = [0, *((b + e) // 2 for b, e in zip(starts[1:], stops)), length]
    return [Window(k, a, e, cuts[k], cuts[k + 1], stops[k - 1] - a if k else 0,
                   e - starts[k + 1] if k + 1 < len(starts) else 0)
            for k, (a, e) in enumerate(zip(starts, stops))]


def stitch(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, windows: list[Window],
           scale_in: int = 1, scale_out: int = 1) -> torch.Tensor:
    """Apply ``fn`` window by window along dim -2 and join the results, each overlap cut at its
    middle. The windows are in units of ``x`` / ``scale_in`` and of ``fn``'s output / ``scale_out``."""
    if len(windows) == 1:
        return fn(x)
    pieces = []
    for w in windows:
        y = fn(x[..., w.start * scale_in:w.stop * scale_in, :])
        pieces.append(y[..., (w.keep_start - w.start) * scale_out:(w.keep_stop - w.start) * scale_out, :])
    return torch.cat(pieces, dim=-2)


def crossfade(window: Window) -> torch.Tensor:
    """Overlap-add weights of one window: linear ramps over what it shares with each neighbour,
    so that neighbours' weights sum to 1 across their overlap."""
    w = torch.ones(window.width)
    if window.before:
        w[:window.before] = _ramp(window.before)
    if window.after:
        w[window.width - window.after:] = _ramp(window.after).flip(0)
    return w


class OverlapAdd:
    """Joins per-window signals ``[C, width]`` into ``[C, length]``, one window at a time (so a long
    track never has all its windows in memory): crossfaded, then divided by the summed weights,
    which matters where the end-aligned last window reaches back over two others."""

    def __init__(self, channels: int, length: int):
        self.total = torch.zeros(channels, length)
        self.weight = torch.zeros(length)

    def add(self, window: Window, piece: torch.Tensor) -> None:
        w = crossfade(window)
        self.total[:, window.start:window.stop] += piece * w
        self.weight[window.start:window.stop] += w

    def result(self) -> torch.Tensor:
        return self.total / self.weight


def _ramp(n: int) -> torch.Tensor:
    return torch.linspace(0, 1, n + 2)[1:-1]
