"""What a run writes besides its weights: components swapped in whole, the loss log, its plot, and
validation's measurements."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

from ..audio import atomic_write_text, staged_dir
from .config import STAGES


def save_component(save: Callable[[Path], object], folder: Path) -> None:
    with staged_dir(folder) as tmp:
        save(tmp)


class LossLog:
    FIELDS = ("stage", "step", "loss", "l1", "kl", "elapsed_s", "disc", "accuracy", "phase")  # new columns go last

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, stage: str, step: int, values: dict, elapsed: float) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            if new:
                w.writeheader()
            w.writerow({"stage": stage, "step": step, "elapsed_s": round(elapsed, 3),
                        **{k: f"{v:.6g}" for k, v in values.items()}})


def plot_losses(log: Path, out: Path, width: int = 720, height: int = 240) -> None:
    """An SVG of each stage's loss against its step (log scale), from the CSV log; no plotting library."""
    if not log.exists():
        return
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    stages = [s for s in STAGES if any(r["stage"] == s for r in rows)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height * len(stages)}" '
             'font-family="sans-serif" font-size="12">']
    for k, stage in enumerate(stages):
        pts = {}
        for r in rows:  # a resumed run re-logs steps: the last value of a step wins
            if r["stage"] == stage and r["loss"]:
                pts[int(r["step"])] = float(r["loss"])
        steps, losses = zip(*sorted(pts.items()))
        ys = [math.log10(max(v, 1e-12)) for v in losses]
        lo, hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        x0, y0, w, h = 60, k * height + 20, width - 80, height - 50
        coords = " ".join(f"{x0 + w * (s - steps[0]) / max(1, steps[-1] - steps[0]):.1f},"
                          f"{y0 + h * (hi - y) / (hi - lo):.1f}" for s, y in zip(steps, ys))
        parts += [f'<text x="{x0}" y="{y0 - 6}">{stage} loss (log10), steps {steps[0]}–{steps[-1]}</text>',
                  f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
                  f'<text x="4" y="{y0 + 10}">{10 ** hi:.3g}</text><text x="4" y="{y0 + h}">{10 ** lo:.3g}</text>',
                  f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/>']
    parts.append("</svg>")
    atomic_write_text(out, "\n".join(parts) + "\n")



def write_validation(path: Path, stage: str, step: int, values: dict) -> None:
    """Append one save's measurements to ``validation.csv``."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(("stage", "step", "metric", "value"))
        for k, v in values.items():
            w.writerow((stage, step, k, f"{v:.6g}"))


def read_validation(path: Path, stage: str) -> dict:
    """The last value of each metric a stage logged."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["metric"]: float(r["value"]) for r in csv.DictReader(f) if r["stage"] == stage}
