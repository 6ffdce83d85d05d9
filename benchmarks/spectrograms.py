"""Look at the notes: spectrograms of one held-out test window, real stems beside each codec path.

    python benchmarks/spectrograms.py --codec v1=demo-v1 --codec v2=demo --out docs/codec-spectrograms.png
    python benchmarks/spectrograms.py --model v1=demo-v1 --model v2=demo --out docs/generated-spectrograms.png

With --model, each model adds two rows: a generated clip (--seed), and an arrangement of the test
track's guitar and piano given its real bass and drums (which that row shows as given).

One row per path (real first), one column per stem; 0 to 2 kHz on a linear axis (n_fft 2048, so
bass and piano partials are resolved), 10.24 s across, log magnitude (80 dB range). Needs Pillow
(installed with diffusers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import RATE, ROOT, Codec, test_windows


def image(wav: np.ndarray, fmax: float = 2000.0, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    spec = torch.stft(torch.as_tensor(wav, dtype=torch.float32), n_fft, hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs().numpy()
    spec = spec[: int(fmax / (RATE / n_fft))]
    db = 20 * np.log10(spec + 1e-6)
    db = np.clip(db - db.max() + 80, 0, 80) / 80
    return (255 * db[::-1]).astype(np.uint8)  # low frequencies at the bottom


@torch.no_grad()
def model_rows(name: str, source: str, stems: list[str], real: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """A generated clip, and guitar and piano arranged around the real bass and drums, as ``[S, N]`` rows."""
    from mtldm_cli import MultiTrackPipeline

    pipe = MultiTrackPipeline.from_pretrained(source, device="cpu")
    given = {s: real[stems.index(s)].numpy() for s in ("bass", "drums")}
    outs = {f"{name} generated": pipe.generate(seed=seed).stems,
            f"{name} arranged (bass, drums given)": pipe.arrange(given, want=["guitar", "piano"], seed=seed).stems}
    n = real.shape[-1]
    return {row: torch.stack([torch.from_numpy(np.asarray(out[s][:n], np.float32)) for s in stems]) for row, out in outs.items()}


def main() -> None:
    from PIL import Image, ImageDraw

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", action="append", help="NAME=MODEL_OR_FOLDER (repeatable)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--track", type=int, default=0, help="which test track (its first 10.24 s)")
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL (repeatable): generated and arranged rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "codec-spectrograms.png")
    args = ap.parse_args()
    default = [] if args.model else ["v1=demo-v1", "v2=demo"]
    codecs = [Codec(*spec.split("=", 1)) for spec in (args.codec or default)]
    stems, windows = test_windows(args.data, args.track + 1)
    real = windows[args.track]
    rows = {"real stems": real}
    for codec in codecs:
        rows |= codec.paths(real)
    for spec in args.model:
        rows |= model_rows(*spec.split("=", 1), stems, real, args.seed)
    order = [stems.index(s) for s in ("bass", "guitar", "piano", "drums")]
    tiles = [[image(rows[name][i].numpy()) for i in order] for name in rows]
    h, w = tiles[0][0].shape
    label, gap = 16, 4
    canvas = Image.new("L", (len(order) * (w + gap), len(rows) * (h + label + gap)), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, row) in enumerate(zip(rows, tiles)):
        for c, tile in enumerate(row):
            x, y = c * (w + gap), r * (h + label + gap)
            draw.text((x + 2, y + 2), f"{name}: {('bass', 'guitar', 'piano', 'drums')[c]}", fill=0)
            canvas.paste(Image.fromarray(tile), (x, y + label))
    canvas.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
