"""Quality of a trained model on the held-out synthetic test split (the numbers in docs/demo-model.md).

    python benchmarks/quality.py                         # the demo model, 16 test tracks
    python benchmarks/quality.py --model models/demo --tracks 32
    python benchmarks/quality.py --quick                 # 4 tracks, for a smoke run

The test split is made by `mtldm data synth --split test` into --data when that folder is missing.
Every number is over one 10.24 s window (the model's segment) per test track.

1. Round trip: each non-silent stem through the vocoder alone (true log-mel -> audio), and through
   VAE + vocoder. Log-mel L1 (VAE) and multi-resolution STFT distance (audio; lower is closer).
   Griffin-Lim is measured beside the model's own vocoder when that is a HiFi-GAN.
2. Arrangement coherence: for each of bass, guitar and piano, generate it given the other three
   true stems, and score it against the given stems' mix: onset agreement (correlation of onset
   envelopes) and chroma agreement (cosine of pitch-class profiles). Baselines: the same generated
   stem against another track's given stems (mismatched), and the true stem against its own (truth).
3. Generation: unconditional clips vs the test set, per stem: Frechet distance between the
   distributions of VAE-encoder latent frames ("VAE-latent FD"; our stand-in for FAD, named as such),
   and the gaps between generated and test per-band log-mel mean and std (dB: brightness and
   dynamics of each stem), with train-split windows vs the test set as the floor; for each sampler
   of --samplers (DDIM with eta 1), so the default sampler is chosen on trained weights.

4. Speed: one `generate` of the model's segment (10.24 s, 4 stems) with the default sampler, on
   this machine's CPU with --threads threads (the issue's budget: under 30 s on 2 cores).

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
from mtldm_cli import MultiTrackPipeline
from mtldm_cli.audio import griffin_lim_vocoder, is_silent
from mtldm_cli.data.datasets import StemDataset
from mtldm_cli.metrics import chroma_agreement, frechet_distance, mrstft_distance, onset_agreement

ROOT = Path(__file__).resolve().parents[1]


def windows(pipe: MultiTrackPipeline, folder: Path, tracks: int) -> torch.Tensor:
    """``[K, S, N]``: one model-segment window per track, at a fixed per-track offset."""
    ds = StemDataset(folder, stems=pipe.stems, sample_rate=pipe.sample_rate,
                     segment_seconds=pipe.config.audio.segment_seconds, seed=0)
    first = {}
    for i in range(len(ds)):
        first.setdefault(ds.locate(i)[0], i)
    picks = list(first.values())[:tracks]
    return torch.stack([ds[(i, 0)]["stems"] for i in picks])


@torch.no_grad()
def round_trip(pipe: MultiTrackPipeline, stems: torch.Tensor) -> dict:
    clips = stems.reshape(-1, stems.shape[-1])
    clips = clips[[not is_silent(c) for c in clips]]
    frames = pipe.config.audio.segment_frames
    mel = pipe.codec.mel(clips, frames)
    rec = torch.cat([pipe.codec.vae.decode(pipe.codec.vae.encode(m[None, None]).latent_dist.mode()).sample[:, 0] for m in mel])
    vocoders = {pipe.config.vocoder: pipe.codec.vocoder}
    if pipe.config.vocoder != "griffin-lim":
        vocoders["griffin-lim"] = griffin_lim_vocoder(pipe.config.audio)
    out = {"clips": len(clips), "vae_log_mel_l1": round(float((rec - mel).abs().mean()), 4)}
    for name, voc in vocoders.items():
        for what, m in (("vocoder_only", mel), ("vae_and_vocoder", rec)):
            wav = torch.cat([voc(x[None]) for x in m])
            n = min(wav.shape[-1], clips.shape[-1])
            out[f"{what}_mrstft[{name}]"] = round(float(mrstft_distance(wav[:, :n], clips[:, :n])), 4)
    return out


def arrangement(pipe: MultiTrackPipeline, stems: torch.Tensor, targets: list[str], steps: int | None) -> dict:
    sr, names = pipe.sample_rate, pipe.stems
    rows = {t: {"generated": [], "mismatched": [], "truth": []} for t in targets}
    k = len(stems)
    for t in targets:
        j = names.index(t)
        gen = []
        for i in range(k):
            given = {s: stems[i, n].numpy() for n, s in enumerate(names) if s != t}
            gen.append(pipe.arrange(given, want=[t], seed=i, steps=steps).stems[t])
        for i in range(k):
            ctx = np.sum([stems[i, n].numpy() for n in range(len(names)) if n != j], axis=0)
            other = np.sum([stems[(i + 1) % k, n].numpy() for n in range(len(names)) if n != j], axis=0)
            truth = stems[i, j].numpy()
            if is_silent(truth) or is_silent(ctx) or is_silent(other):
                continue
            for row, (a, b) in (("generated", (gen[i], ctx)), ("mismatched", (gen[i], other)), ("truth", (truth, ctx))):
                rows[t][row].append((onset_agreement(a, b, sr), chroma_agreement(a, b, sr)))
    out = {}
    for t, r in rows.items():
        out[t] = {row: {"onset": round(float(np.mean([v[0] for v in vals])), 3),
                        "chroma": round(float(np.mean([v[1] for v in vals])), 3), "pairs": len(vals)}
                  for row, vals in r.items() if vals}
    return out


@torch.no_grad()
def latent_frames(pipe: MultiTrackPipeline, wav: torch.Tensor) -> np.ndarray:
    """``[S, N]`` audio -> per stem, VAE posterior means as ``[frames, C*F]`` vectors."""
    z = pipe.codec.encode(wav[None])[0]  # [S, C, T, F]
    return z.permute(0, 2, 1, 3).reshape(z.shape[0], z.shape[2], -1).cpu().numpy()


@torch.no_grad()
def mel_frames(pipe: MultiTrackPipeline, wav: torch.Tensor) -> np.ndarray:
    """``[S, N]`` audio -> per stem, log-mel frames ``[S, frames, n_mels]`` in dB."""
    frames = -(-wav.shape[-1] // pipe.config.audio.hop_length)
    return (pipe.codec.mel(wav, frames) * 20 / np.log(10)).cpu().numpy()


def band_stats_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean over mel bands of |difference| of the per-band mean and of the per-band std (dB)."""
    return (float(np.abs(a.mean(0) - b.mean(0)).mean()), float(np.abs(a.std(0) - b.std(0)).mean()))


def generation(pipe: MultiTrackPipeline, test: torch.Tensor, floor: torch.Tensor, clips: int, samplers: list[str]) -> dict:
    """Unconditional clips vs the test windows, per stem and for each "sampler:steps": the VAE-latent
    FD, and the gaps of per-band log-mel mean and std; train-split windows vs test give the floor."""
    stems = pipe.stems

    def features(wavs):
        return [latent_frames(pipe, w) for w in wavs], [mel_frames(pipe, w) for w in wavs]

    def pool(feats, j):
        return np.concatenate([f[j] for f in feats])

    def compare(lat, mel, ref_lat, ref_mel):
        row = {}
        for j, s in enumerate(stems):
            mean_gap, std_gap = band_stats_gap(pool(mel, j), pool(ref_mel, j))
            row[s] = {"vae_latent_fd": round(frechet_distance(pool(lat, j), pool(ref_lat, j)), 3),
                      "mel_mean_gap_db": round(mean_gap, 2), "mel_std_gap_db": round(std_gap, 2)}
        row["mean"] = {k: round(float(np.mean([row[s][k] for s in stems])), 3) for k in row[stems[0]]}
        return row

    test_lat, test_mel = features(test)
    out = {"clips": clips, "floor[train_vs_test]": compare(*features(floor), test_lat, test_mel)}
    for spec in samplers:
        sampler, steps = spec.split(":")
        wavs = []
        for i in range(clips):
            o = pipe.generate(seed=1000 + i, sampler=sampler, steps=int(steps))
            wavs.append(torch.from_numpy(np.stack([o.stems[s] for s in stems])))
        out[f"generated_vs_test[{spec}]"] = compare(*features(wavs), test_lat, test_mel)
    return out


def speed(pipe: MultiTrackPipeline, repeats: int = 2) -> dict:
    runs = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = pipe.generate(seed=i)
        runs.append({"total_s": round(time.perf_counter() - t0, 2), **out.info["timings"]})
    return {"seconds_of_audio": round(out.duration, 2), "threads": torch.get_num_threads(), "runs": runs,
            "best_total_s": min(r["total_s"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--train-data", type=Path, default=ROOT / "data" / "mini-slakh" / "train",
                    help="windows from here give the Frechet distance's floor (made if missing)")
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--quick", action="store_true", help="4 tracks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samplers", nargs="*", default=None,
                    help='"sampler:steps" to compare in the generation part (default: the model\'s, ddim:25, ddim:50)')
    ap.add_argument("--skip", nargs="*", default=[], choices=["speed", "round-trip", "arrangement", "generation"])
    args = ap.parse_args()
    tracks = 4 if args.quick else args.tracks
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    pipe = MultiTrackPipeline.from_pretrained(args.model, device="cpu")
    from mtldm_cli.data.render import synthesize

    for folder, split in ((args.data, "test"), (args.train_data, "train")):
        if not folder.is_dir():
            synthesize(folder, tracks=max(tracks, 8), seconds=30.0, split=split, sample_rate=pipe.sample_rate)
    test, floor = windows(pipe, args.data, tracks), windows(pipe, args.train_data, tracks)
    report = {**machine_report(), "model": args.model, "model_source": pipe.source.source if pipe.source else None,
              "data": str(args.data), "tracks": len(test), "seconds_each": pipe.config.audio.segment_seconds,
              "sampler": pipe.config.sampling.sampler, "steps": args.steps or pipe.config.sampling.steps}
    t0 = time.perf_counter()
    if "speed" not in args.skip:
        report["speed"] = speed(pipe)
    if "round-trip" not in args.skip:
        report["round_trip"] = round_trip(pipe, test)
    if "arrangement" not in args.skip:
        report["arrangement"] = arrangement(pipe, test, ["bass", "guitar", "piano"], args.steps)
    if "generation" not in args.skip:
        default = f"{pipe.config.sampling.sampler}:{args.steps or pipe.config.sampling.steps}"
        samplers = args.samplers or list(dict.fromkeys([default, "ddim:25", "ddim:50"]))
        report["generation"] = generation(pipe, test, floor, len(test), samplers)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
