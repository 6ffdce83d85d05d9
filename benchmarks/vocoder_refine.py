"""Does a Griffin-Lim polish sharpen the Vocos' attacks? Real held-out test stems through a model's
front end, VAE and Vocos, then N Griffin-Lim iterations started from the Vocos' own phase (its
magnitude kept), beside the real stems.

    python benchmarks/vocoder_refine.py --model demo --tracks 4 --iters 0 4 16 32

Per stem, over one 10.24 s window per test track: onset sharpness (top 2 % of the onset envelope
over its mean), MR-STFT distance to the real stem, and the voiced frames (torchcrepe, as
benchmarks/codec.py) as a share of the real stems' voiced frames. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import PITCHED, RATE, Codec, fit, pitch, test_windows
from benchmarks.common import machine_report
from mtldm_cli.audio import is_silent
from mtldm_cli.metrics import mrstft_distance, onset_sharpness

ROOT = Path(__file__).resolve().parents[1]


def polish(vocoder, spec: torch.Tensor, iters: int) -> torch.Tensor:
    """The Vocos' waveform after ``iters`` Griffin-Lim iterations on its own STFT frames."""
    istft, magnitude = vocoder.head.istft, spec.abs()
    wav = istft(spec)
    for _ in range(iters):
        angle = vocoder.target_spectrum(wav)[..., :magnitude.shape[-1]].angle()
        wav = istft(magnitude * torch.exp(1j * angle))
    return wav


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--iters", type=int, nargs="*", default=[0, 4, 16, 32])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec("model", args.model)
    stems, windows = test_windows(args.data, args.tracks)
    hop = codec.audio.hop_length
    specs = []
    for track in windows:
        mel = codec.front(track, track.shape[-1] // hop)
        specs.append(codec.vocoder.spectrum(codec.vae.decode(codec.vae.encode(mel[:, None]).latent_dist.mode()).sample[:, 0]))
    sounding = [(k, i, s) for k, track in enumerate(windows) for i, s in enumerate(stems) if not is_silent(track[i])]
    real_voiced = {(k, s): pitch(windows[k][i].numpy(), "tiny")[1].mean() for k, i, s in sounding if s in PITCHED}
    report = {**machine_report(), "model": args.model, "tracks": len(windows), "real": {
        "onset_sharpness": {s: round(float(np.mean([onset_sharpness(windows[k][i].numpy(), RATE)
                                                    for k, i, t in sounding if t == s])), 2) for s in stems}}}
    for n in args.iters:
        out = [fit(polish(codec.vocoder, spec, n), track.shape[-1]) for spec, track in zip(specs, windows)]
        rows: dict[str, dict[str, list[float]]] = {s: {"sharp": [], "mrstft": [], "voiced": [], "real_voiced": []}
                                                   for s in stems}
        for k, i, s in sounding:
            rows[s]["sharp"].append(onset_sharpness(out[k][i].numpy(), RATE))
            rows[s]["mrstft"].append(float(mrstft_distance(out[k][i], windows[k][i])))
            if s in PITCHED:
                rows[s]["voiced"].append(pitch(out[k][i].numpy(), "tiny")[1].mean())
                rows[s]["real_voiced"].append(real_voiced[(k, s)])
        report[f"iters={n}"] = {s: {"onset_sharpness": round(float(np.mean(r["sharp"])), 2),
                                    "mrstft": round(float(np.mean(r["mrstft"])), 3)}
                                | ({"voiced_share_of_real": round(float(np.sum(r["voiced"]) / np.sum(r["real_voiced"])), 3)}
                                   if np.sum(r["real_voiced"]) > 0 else {}) for s, r in rows.items()}
        print(f"iters={n}: {report[f'iters={n}']}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
