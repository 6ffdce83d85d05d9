"""Separation on the held-out synthetic test split: SI-SDRi per stem and method, speed, oracle ceilings.

    python benchmarks/separation.py                      # the demo model, 8 test tracks, paper settings
    python benchmarks/separation.py --model models/demo --tracks 16
    python benchmarks/separation.py --quick              # 2 tracks, 30 steps, 1 resample: < 5 min on 2 cores
    python benchmarks/separation.py --methods dirac gaussian --settings 150x2 75x1 50x1 30x1  # cost sweep
    python benchmarks/separation.py --methods dirac --long 2 --long-settings 150x2/1 32x2/4   # whole tracks

Each test track gives one 10.24 s window (the model's segment) of its four stems; the mixture is
their sum. Scores follow MSDM's protocol (`mtldm evaluate`): SI-SDRi on 4 s windows with a 2 s hop,
windows with at most one active stem skipped, averaged per stem over all windows of all tracks
("msdm"). The synthetic stems rest in exact silence; in a window where a stem is silent, SI-SDR
only compares the loudness of estimate and mixture against an eps, so "active" also gives the mean
over the windows where that stem sounds.

Rows:
- each method (dirac, gaussian, and ours, consistency, at each --consistency strength), without and
  with the Wiener post-filter (`--wiener`);
- oracle "VAE + vocoder": the true stems encoded and decoded (what a perfect latent separator
  would give: the ceiling of every latent method without the post-filter);
- oracle "VAE + vocoder + Wiener": the same, post-filtered with the mixture;
- oracle "ideal ratio mask": the true stems' |S_i|^2 / sum |S_j|^2 over the mixture's STFT.
Time: seconds of CPU wall time per second of separated audio, at --threads threads.
With several --settings (STEPSxRESAMPLES), each method runs at each, its rows named ``method STEPSxRESAMPLES``;
every setting draws the same seed for a track, and "paired" gives each row's mean and spread of the
per-track difference (mean active SI-SDRi after Wiener) from the first setting's row.
``--long N`` instead separates the first N test tracks whole (30 s: several chunks) at each of
--long-settings (STEPSxRESAMPLES/CHUNK_BATCH): wall time per audio second and whole-track SI-SDRi.

Prints a JSON report (machine, date, settings, figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report
from benchmarks.quality import ROOT, windows
from mtldm_cli import MultiTrackPipeline
from mtldm_cli.metrics import evaluate_separation
from mtldm_cli.separation import wiener_filter


def pooled(scores: list[dict], stems) -> dict:
    """Per stem: SI-SDRi averaged over every counted window of every track (MSDM pools windows),
    and the same over the windows where that stem sounds ("active")."""
    out = {}
    for key, count in (("si_sdri", "windows"), ("si_sdri_active", "windows_active")):
        row = {}
        for s in stems:
            n = sum(d[s][count] for d in scores)
            total = sum(d[s][key] * d[s][count] for d in scores if d[s][count])
            row[s] = round(total / n, 2) if n else None
        vals = [v for v in row.values() if v is not None]
        row["mean"] = round(float(np.mean(vals)), 2) if vals else None
        row["windows"] = {s: sum(d[s][count] for d in scores) for s in stems}
        out["msdm" if key == "si_sdri" else "active"] = row
    return out


def paired(rows: dict[str, list], stems, settings) -> dict:
    """Each cheaper setting against the first, track by track (same seeds): the mean and standard
    deviation of the difference in mean active SI-SDRi after Wiener, in dB."""
    def per_track(d: dict) -> float:
        vals = [d[s]["si_sdri_active"] for s in stems if d[s]["windows_active"]]
        return float(np.mean(vals))

    first = f"{settings[0][0]}x{settings[0][1]}"
    out = {}
    for name, scores in rows.items():
        if not name.endswith(" + Wiener") or f" {first} " in f" {name} " or name.startswith("oracle"):
            continue
        base = rows[name.replace(name.split(" ")[-3], first)]
        diff = [per_track(a) - per_track(b) for a, b in zip(scores, base)]
        out[name] = {"against": name.replace(name.split(" ")[-3], first), "mean_db": round(float(np.mean(diff)), 3),
                     "std_db": round(float(np.std(diff, ddof=1)), 3) if len(diff) > 1 else None}
    return out


def whole_tracks(pipe, args) -> dict:
    """Whole test tracks, several chunks each, at each long setting: wall time and SI-SDRi (Wiener on)."""
    from mtldm_cli.audio import read_audio

    folders = sorted(p for p in args.data.iterdir() if (p / "mix.wav").is_file())[:args.long]
    stems = list(pipe.stems)
    rows: dict = {}
    audio_s = 0.0
    for i, folder in enumerate(folders):
        ref = {s: read_audio(folder / f"{s}.wav")[0] for s in stems}
        mix = sum(ref.values())
        audio_s += len(mix) / pipe.sample_rate
        for setting in args.long_settings:
            steps, rest = setting.lower().split("x")
            resamples, chunk_batch = (int(v) for v in rest.split("/"))
            row = rows.setdefault(setting, {"wall_s": 0.0, "scores": []})
            t0 = time.perf_counter()
            out = pipe.separate(mix, sample_rate=pipe.sample_rate, method=args.methods[0], steps=int(steps),
                                resamples=resamples, chunk_batch=chunk_batch, seed=i)
            row["wall_s"] += time.perf_counter() - t0
            row["chunks"] = out.info["chunks"]
            row["scores"].append(evaluate_separation(out.stems, ref, pipe.sample_rate, mix))
    report = {**machine_report(), "model": args.model, "method": args.methods[0], "tracks": len(folders),
              "audio_s": round(audio_s, 2), "threads": torch.get_num_threads(), "settings": {}}
    for setting, row in rows.items():
        report["settings"][setting] = {"wall_s_per_audio_s": round(row["wall_s"] / audio_s, 3), "chunks_per_track": row["chunks"],
                                       "si_sdri_db": pooled(row["scores"], stems)}
    first = next(iter(rows))
    for setting in rows:
        report["settings"][setting]["speedup_over_first"] = round(rows[first]["wall_s"] / rows[setting]["wall_s"], 2)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--methods", nargs="*", default=["dirac", "gaussian", "consistency"])
    ap.add_argument("--consistency", nargs="*", type=float, default=[1.0],
                    help="strengths to run the consistency method with (one row each)")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's separate_steps")
    ap.add_argument("--resamples", type=int, default=2)
    ap.add_argument("--settings", nargs="*", default=None,
                    help="STEPSxRESAMPLES pairs to run each method at (overrides --steps and --resamples)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long", type=int, default=0, metavar="N", help="separate N whole test tracks instead")
    ap.add_argument("--long-settings", nargs="*", default=["150x2/1", "32x2/4"])
    ap.add_argument("--quick", action="store_true", help="2 tracks, 30 steps, 1 resample")
    args = ap.parse_args()
    if args.quick:
        args.tracks, args.steps, args.resamples = 2, 30, 1
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    pipe = MultiTrackPipeline.from_pretrained(args.model, device="cpu")
    if args.long:
        print(json.dumps(whole_tracks(pipe, args), indent=1))
        return
    if not args.data.is_dir():
        from mtldm_cli.data.render import synthesize

        synthesize(args.data, tracks=max(args.tracks, 8), seconds=30.0, split="test", sample_rate=pipe.sample_rate)
    test = windows(pipe, args.data, args.tracks)
    stems, sr = list(pipe.stems), pipe.sample_rate
    steps = args.steps or pipe.config.sampling.separate_steps
    settings = [tuple(int(v) for v in s.lower().split("x")) for s in args.settings] if args.settings else [(steps, args.resamples)]
    report = {**machine_report(), "model": args.model, "data": str(args.data), "tracks": len(test),
              "seconds_each": pipe.config.audio.segment_seconds, "settings": [f"{n}x{r}" for n, r in settings],
              "threads": torch.get_num_threads()}
    rows: dict[str, list] = {}
    times: dict[str, float] = {}

    def score(name: str, est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor) -> None:
        rows.setdefault(name, []).append(evaluate_separation(
            {s: est[j].numpy() for j, s in enumerate(stems)}, {s: ref[j].numpy() for j, s in enumerate(stems)},
            sr, mix.numpy()))

    for i, ref in enumerate(test):
        mix = ref.sum(0)
        coded = pipe.codec.decode(pipe.codec.encode(ref[None]), ref.shape[-1])[0]
        score("oracle: VAE + vocoder", coded, ref, mix)
        score("oracle: VAE + vocoder + Wiener", wiener_filter(coded, mix), ref, mix)
        score("oracle: ideal ratio mask", wiener_filter(ref, mix), ref, mix)
        runs = [(m, {"method": m}) for m in args.methods if m != "consistency"]
        runs += [(f"consistency (strength {g:g})", {"method": "consistency", "consistency": g})
                 for g in args.consistency if "consistency" in args.methods]
        runs = [(f"{name} {n}x{r}" if len(settings) > 1 else name, extra | {"steps": n, "resamples": r})
                for name, extra in runs for n, r in settings]
        for name, extra in runs:
            t0 = time.perf_counter()
            out = pipe.separate(mix, **extra, seed=i, wiener=False)  # the post-filter is applied (and scored) below
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            est = torch.from_numpy(np.stack([out.stems[s] for s in stems]))
            score(name, est, ref, mix)
            score(f"{name} + Wiener", wiener_filter(est, mix), ref, mix)
    audio_s = len(test) * ref.shape[-1] / sr
    report["si_sdri_db"] = {name: pooled(s, stems) for name, s in rows.items()}
    report["wall_s_per_audio_s"] = {m: round(t / audio_s, 2) for m, t in times.items()}
    if len(settings) > 1:
        report["paired"] = paired(rows, stems, settings)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
