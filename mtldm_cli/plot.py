"""One picture of a result: each stem's spectrogram and the mix's, stacked on a shared time axis.

Numpy and Pillow only (Pillow comes with diffusers), so `mtldm plot` needs no torch.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

PLOT_FILE = "spectrograms.png"
ROW_HEIGHT = 96
LABEL_WIDTH = 64
AXIS_HEIGHT = 22
F_MIN = 30.0
RANGE_DB = 80.0


def spectrogram(wav: np.ndarray, sample_rate: int, columns: int, rows: int = ROW_HEIGHT,
                n_fft: int = 2048) -> np.ndarray:
    """``[rows, columns]`` log magnitude in dB on a log-frequency axis from ``F_MIN`` to Nyquist (low
    notes get as much room as high), low frequencies at the bottom."""
    wav = np.asarray(wav, np.float64)
    wav = wav.mean(0) if wav.ndim == 2 else wav
    hop = max(1, len(wav) // columns)
    padded = np.pad(wav, (n_fft // 2, n_fft // 2 + hop * columns))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:columns]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))  # [columns, bins]
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    edges = np.geomspace(F_MIN, sample_rate / 2, rows + 1)
    band = np.clip(np.searchsorted(freqs, edges), 1, len(freqs) - 1)
    cols = [mag[:, lo:max(hi, lo + 1)].max(axis=1) for lo, hi in zip(band[:-1], band[1:], strict=True)]
    return 20 * np.log10(np.stack(cols) + 1e-9)[::-1]


def _colour(values: np.ndarray) -> np.ndarray:
    """A dark-to-bright palette (black, purple, orange, pale yellow), ``[..., 3]`` uint8."""
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)
    x = values * (len(stops) - 1)
    i = np.clip(x.astype(int), 0, len(stops) - 2)
    t = (x - i)[..., None]
    return (stops[i] * (1 - t) + stops[i + 1] * t).astype(np.uint8)


def plot_stems(stems: Mapping[str, np.ndarray], sample_rate: int, *, width: int = 1000, title: str = "") -> bytes:
    """A PNG of one row per stem (in the given order), then the mix (their sum), under one time axis,
    all on one dB scale (``RANGE_DB`` below the loudest bin of any row)."""
    from PIL import Image, ImageDraw

    rows = {**stems, "mix": np.sum(list(stems.values()), axis=0)} if "mix" not in stems else dict(stems)
    seconds = next(iter(rows.values())).shape[-1] / sample_rate
    top = 18 if title else 0
    height = top + len(rows) * (ROW_HEIGHT + 2) + AXIS_HEIGHT
    img = Image.new("RGB", (LABEL_WIDTH + width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0))
    specs = {name: spectrogram(wav, sample_rate, width) for name, wav in rows.items()}
    loudest = max(float(s.max()) for s in specs.values())  # one scale: a quiet stem looks quiet
    for k, (name, db) in enumerate(specs.items()):
        y = top + k * (ROW_HEIGHT + 2)
        img.paste(Image.fromarray(_colour(np.clip((db - loudest + RANGE_DB) / RANGE_DB, 0, 1))), (LABEL_WIDTH, y))
        draw.text((4, y + ROW_HEIGHT // 2 - 6), name, fill=(0, 0, 0))
    y = height - AXIS_HEIGHT
    step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300) if seconds / s <= 12)
    for t in np.arange(0, seconds + 1e-9, step):
        x = LABEL_WIDTH + round(t / seconds * (width - 1))
        draw.line([(x, y), (x, y + 4)], fill=(0, 0, 0))
        draw.text((min(x + 2, LABEL_WIDTH + width - 30), y + 6), f"{t:g} s", fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
