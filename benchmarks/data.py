"""Synthetic mini-Slakh: render speed, loader throughput, and what the data holds.

    python benchmarks/data.py                          # 60 tracks of 30 s, 16 kHz and 22.05 kHz
    python benchmarks/data.py --tracks 100 --jobs 2

1. Render speed of `mtldm data synth` (compose + render + write), one process and --jobs workers,
   at 16 kHz and at MSDM's 22,050 Hz: tracks per second and seconds of audio per wall second.
   Where the time goes, for one process: composing, rendering (SoundFont + resampling), writing.
2. Loader throughput: 10.24 s four-stem segments per second from StemDataset, read at the files'
   rate and resampled from 22,050 Hz.
3. The data itself, over the 16 kHz set: styles, time signatures, and how much of each stem sounds
   (MSDM's activity test on half-second windows) -- stems rest for sections, as in real songs.

Prints a JSON report (machine, date, settings, figures).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report
from mtldm_cli.data.compose import STEMS, compose
from mtldm_cli.data.datasets import StemDataset
from mtldm_cli.data.render import render_song, soundfont_path, synthesize


def render_speed(root: Path, tracks: int, seconds: float, rate: int, jobs: int) -> dict:
    t0 = time.perf_counter()
    report = synthesize(root, tracks=tracks, seconds=seconds, sample_rate=rate, jobs=jobs)
    wall = time.perf_counter() - t0
    return {"sample_rate": rate, "jobs": jobs, "tracks": tracks, "seconds_each": seconds,
            "wall_s": round(wall, 2), "tracks_per_s": round(tracks / wall, 2),
            "audio_s_per_wall_s": round(tracks * seconds / wall, 1), "synth_elapsed_s": report.as_dict()["elapsed_s"]}


def breakdown(tracks: int, seconds: float, rate: int) -> dict:
    """Per-track time in composing and rendering (writing is the rest of the synth figure)."""
    sf2 = soundfont_path()
    t_compose = t_render = 0.0
    for seed in range(tracks):
        t0 = time.perf_counter()
        song = compose(seed, seconds)
        t1 = time.perf_counter()
        render_song(song, rate, sf2)
        t_compose, t_render = t_compose + t1 - t0, t_render + time.perf_counter() - t1
    return {"compose_ms_per_track": round(1000 * t_compose / tracks, 1),
            "render_ms_per_track": round(1000 * t_render / tracks, 1)}


def loader_speed(root: Path, rate: int) -> dict:
    ds = StemDataset(root, sample_rate=rate)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    wall = time.perf_counter() - t0
    return {"files_rate": ds.tracks[0].sample_rate, "read_rate": rate, "segments": len(ds),
            "segments_per_s": round(len(ds) / wall, 1)}


def contents(root: Path) -> dict:
    metas = [json.loads(p.read_text()) for p in sorted(root.glob("*/meta.json"))]
    active = {s: round(float(np.mean([m["active"][s] for m in metas])), 3) for s in STEMS}
    silent = {s: sum(m["active"][s] < 0.999 for m in metas) for s in STEMS}
    return {"tracks": len(metas), "styles": dict(collections.Counter(m["style"] for m in metas)),
            "time_signatures": dict(collections.Counter(m["time_signature"] for m in metas)),
            "tempo_range": [min(m["tempo"] for m in metas), max(m["tempo"] for m in metas)],
            "mean_active_fraction": active, "tracks_with_a_resting_section": silent,
            "example_captions": [m["caption"] for m in metas[:3]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--jobs", type=int, default=2, help="workers for the parallel run (1 skips it)")
    args = ap.parse_args()
    report = {**machine_report(), "soundfont": soundfont_path().name}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [render_speed(tmp / "16k", args.tracks, args.seconds, 16000, 1),
                render_speed(tmp / "22k", args.tracks, args.seconds, 22050, 1)]
        if args.jobs > 1:
            runs.append(render_speed(tmp / "16k-jobs", args.tracks, args.seconds, 16000, args.jobs))
        report["render"] = runs
        report["breakdown_16k"] = breakdown(min(args.tracks, 10), args.seconds, 16000)
        report["loader"] = [loader_speed(tmp / "16k", 16000), loader_speed(tmp / "22k", 16000)]
        report["contents"] = contents(tmp / "16k")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
