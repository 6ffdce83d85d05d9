"""What a musician hears, as numbers: a beat, one tempo shared by the stems, parts on the beat grid.

Used by the quality benchmarks; run on its own it checks the estimators against the truth of the
held-out test tracks (their meta.json tempo):

    python benchmarks/music.py --tracks 16

- beat regularity: the highest peak of a stem's normalised onset-envelope autocorrelation between
  lags of 0.2 and 2 s (a steady pulse repeats; noise does not);
- tempo: librosa's tempo estimate from the onset envelope (a standard estimator), and whether it is
  within 8 % of a target (octave errors count as wrong);
- tempo agreement: the share of pairs of sounding stems of one clip whose tempi agree within 8 %;
- grid locking: how far a part's onsets fall from a beat grid (16th notes of the given tempo,
  phase from the given drums' beats), as a fraction of a 16th: 0 on the grid, 0.25 for random onsets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_report

ROOT = Path(__file__).resolve().parents[1]
HOP = 256


def onset_strength(wav: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    return librosa.onset.onset_strength(y=np.asarray(wav, np.float32), sr=sr, hop_length=HOP)


def beat_regularity(wav: np.ndarray, sr: int) -> float:
    env = onset_strength(wav, sr)
    env = env - env.mean()
    if not env.any():
        return 0.0
    ac = np.correlate(env, env, "full")[len(env) - 1:]
    ac = ac / ac[0]
    lo, hi = int(0.2 * sr / HOP), min(len(ac) - 1, int(2.0 * sr / HOP))
    return float(ac[lo:hi].max()) if hi > lo else 0.0


def tempo(wav: np.ndarray, sr: int) -> float:
    import librosa

    return float(librosa.feature.tempo(onset_envelope=onset_strength(wav, sr), sr=sr, hop_length=HOP)[0])


def tempo_within(estimate: float, target: float, tolerance: float = 0.08) -> bool:
    return abs(estimate - target) <= tolerance * target


def tempo_agreement(stems: list[np.ndarray], sr: int) -> float:
    tempi = [tempo(w, sr) for w in stems]
    pairs = [(a, b) for i, a in enumerate(tempi) for b in tempi[i + 1:]]
    return float(np.mean([tempo_within(a, b) for a, b in pairs])) if pairs else float("nan")


def grid_offset(part: np.ndarray, drums: np.ndarray, bpm: float, sr: int) -> float:
    """Mean distance of the part's onsets from the 16th-note grid the drums' beats set, in 16ths."""
    import librosa

    _, beats = librosa.beat.beat_track(y=np.asarray(drums, np.float32), sr=sr, hop_length=HOP, bpm=bpm, units="time")
    onsets = librosa.onset.onset_detect(y=np.asarray(part, np.float32), sr=sr, hop_length=HOP, units="time")
    if len(beats) == 0 or len(onsets) == 0:
        return float("nan")
    sixteenth = 60.0 / bpm / 4
    phase = float(np.median(np.mod(beats, sixteenth)))
    pos = np.mod(onsets - phase, sixteenth) / sixteenth
    return float(np.mean(np.minimum(pos, 1 - pos)))


def main() -> None:
    from mtldm_cli.audio import is_silent
    from mtldm_cli.data.datasets import StemDataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--tracks", type=int, default=16)
    args = ap.parse_args()
    ds = StemDataset(args.data, sample_rate=16000, segment_seconds=10.24, random_shift=False)
    first: dict[int, int] = {}
    for i in range(len(ds)):
        first.setdefault(ds.locate(i)[0], i)
    rows = []
    rng = np.random.default_rng(0)
    for k, i in list(first.items())[: args.tracks]:
        item = ds[(i, 0)]
        meta = json.loads((ds.tracks[k].path / "meta.json").read_text())
        stems = {s: item["stems"][j].numpy() for j, s in enumerate(ds.stems) if not is_silent(item["stems"][j])}
        bpm = float(meta["tempo"])
        noise_onsets = rng.standard_normal(len(item["mix"])) * (rng.random(len(item["mix"])) < 1e-3)
        rows.append({
            "drums_tempo_ok": tempo_within(tempo(stems["drums"], 16000), bpm) if "drums" in stems else None,
            "mix_tempo_ok": tempo_within(tempo(item["mix"].numpy(), 16000), bpm),
            "regularity": {s: beat_regularity(w, 16000) for s, w in stems.items()},
            "tempo_agreement": tempo_agreement(list(stems.values()), 16000),
            "grid_offset": {s: grid_offset(w, stems["drums"], bpm, 16000) for s, w in stems.items()
                            if s != "drums" and "drums" in stems},
            "grid_offset_random": grid_offset(noise_onsets, stems.get("drums", item["mix"].numpy()), bpm, 16000),
        })

    def mean(values):
        values = [v for v in values if v is not None and np.isfinite(v)]
        return round(float(np.mean(values)), 4) if values else None

    report = {**machine_report(), "tracks": len(rows),
              "drums_tempo_within_8pct": mean([r["drums_tempo_ok"] for r in rows]),
              "mix_tempo_within_8pct": mean([r["mix_tempo_ok"] for r in rows]),
              "beat_regularity": {s: mean([r["regularity"].get(s) for r in rows]) for s in ds.stems},
              "tempo_agreement": mean([r["tempo_agreement"] for r in rows]),
              "grid_offset_sixteenths": {s: mean([r["grid_offset"].get(s) for r in rows]) for s in ("bass", "guitar", "piano")},
              "grid_offset_random_onsets": mean([r["grid_offset_random"] for r in rows])}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
