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
   this machine's CPU with --threads threads (the issue's budget: under 30 s on 2 cores), and one
   `arrange` of guitar and piano around a test window's bass and drums with the model's defaults.
5. Playing together (what a musician hears; benchmarks/music.py's estimators): per generated clip,
   each sounding stem's beat regularity, the share of stem pairs whose tempi agree within 8 %, the
   key agreement of the pitched stems and each stem's onset sharpness; the same on the real test
   windows and on the real windows sent through the model's codec (VAE + vocoder).
6. Following the given stems: bass and drums of each test window given, guitar and piano generated.
   How tightly their onsets sit on the song's 16th-note grid (from the given drums' beats at the
   song's tempo; 0.25 is random onsets) against the true parts'; whether their estimated key is the
   given bass's, against another song's bass; and how much the part changes (log-mel L1) with the
   seed, against with the given stems (another song's bass and drums, the same seed).
7. Following words and a reference (CLAP-conditioned models): prompts naming the test songs' style
   and tempo; the generated drums' tempo within 8 % of the asked one, against unprompted clips; the
   model's own CLAP's zero-shot style accuracy on the prompted clips, against chance; `condition` on
   each test mix, and how often its output is closer (CLAP cosine) to its own reference than to any other;
   the measures of 5 on the prompted, the unprompted and the conditioned clips (--prompt-guidance:
   the whole section again at other guidance scales).

Several models in one report: ``--model v1=demo-v1 --model v2=demo`` (or a folder from scripts/assemble_v2.py). Prints a JSON report
(machine, date, settings, figures per model).
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

from benchmarks import music
from benchmarks.common import machine_report
from mtldm_cli import MultiTrackPipeline
from mtldm_cli.audio import griffin_lim_vocoder, is_silent
from mtldm_cli.data.datasets import StemDataset
from mtldm_cli.errors import InputError
from mtldm_cli.metrics import chroma_agreement, estimate_key, frechet_distance, key_agreement, mrstft_distance, onset_agreement, onset_sharpness

ROOT = Path(__file__).resolve().parents[1]


def first_windows(pipe: MultiTrackPipeline, folder: Path, tracks: int) -> tuple[StemDataset, list[int]]:
    """The dataset of ``folder`` and the items of its first ``tracks`` tracks' first model-segment
    windows (at a fixed per-track offset)."""
    ds = StemDataset(folder, stems=pipe.stems, sample_rate=pipe.sample_rate,
                     segment_seconds=pipe.config.audio.segment_seconds, seed=0)
    first: dict[int, int] = {}
    for i in range(len(ds)):
        first.setdefault(ds.locate(i)[0], i)
    return ds, list(first.values())[:tracks]


def windows(pipe: MultiTrackPipeline, folder: Path, tracks: int) -> torch.Tensor:
    """``[K, S, N]``: the :func:`first_windows`' stems."""
    ds, picks = first_windows(pipe, folder, tracks)
    return torch.stack([ds[(i, 0)]["stems"] for i in picks])


def window_metas(pipe: MultiTrackPipeline, folder: Path, tracks: int) -> list[dict]:
    """The meta.json (style, tempo, key) of the :func:`first_windows`' tracks, in their order."""
    ds, picks = first_windows(pipe, folder, tracks)
    return [json.loads((ds.tracks[ds.locate(i)[0]].path / "meta.json").read_text()) for i in picks]


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


PITCHED = ("bass", "guitar", "piano")


def mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(values)), 4) if values else None


def clip_measures(stems: dict[str, np.ndarray], sr: int) -> dict:
    """What a musician hears in one clip: beat, shared tempo and key, attacks (sounding stems only)."""
    sounding = {s: w for s, w in stems.items() if not is_silent(w)}
    pitched = [w for s, w in sounding.items() if s in PITCHED]
    return {"regularity": {s: music.beat_regularity(w, sr) for s, w in sounding.items()},
            "tempo_agreement": music.tempo_agreement(list(sounding.values()), sr),
            "key_agreement": key_agreement(pitched, sr),
            "sharpness": {s: onset_sharpness(w, sr) for s, w in sounding.items()}}


def summarise(rows: list[dict], stems) -> dict:
    return {"clips": len(rows),
            "beat_regularity": {s: mean([r["regularity"].get(s) for r in rows]) for s in stems},
            "tempo_agreement": mean([r["tempo_agreement"] for r in rows]),
            "key_agreement": mean([r["key_agreement"] for r in rows]),
            "onset_sharpness": {s: mean([r["sharpness"].get(s) for r in rows]) for s in stems}}


def as_dict(pipe: MultiTrackPipeline, wav: torch.Tensor) -> dict[str, np.ndarray]:
    return {s: wav[j].numpy() for j, s in enumerate(pipe.stems)}


@torch.no_grad()
def through_codec(pipe: MultiTrackPipeline, stems: torch.Tensor) -> torch.Tensor:
    """``[S, N]`` real stems -> the same through the model's VAE and vocoder."""
    return pipe.codec.decode(pipe.codec.encode(stems[None]), stems.shape[-1])[0].cpu()


def together(pipe: MultiTrackPipeline, test: torch.Tensor, clips: int) -> dict:
    """Playing together: generated clips beside the real test windows and the real through the codec."""
    sr = pipe.sample_rate
    real = [clip_measures(as_dict(pipe, w), sr) for w in test]
    codec = [clip_measures(as_dict(pipe, through_codec(pipe, w)), sr) for w in test]
    gen = [clip_measures(pipe.generate(seed=1000 + i).stems, sr) for i in range(clips)]
    out = {"real": summarise(real, pipe.stems), "real_through_codec": summarise(codec, pipe.stems),
           "generated": summarise(gen, pipe.stems)}
    g, r, c = out["generated"], out["real"], out["real_through_codec"]
    out["ratios"] = {
        "beat_regularity_vs_real": {s: ratio(g["beat_regularity"][s], r["beat_regularity"][s]) for s in pipe.stems},
        "tempo_agreement_vs_real": ratio(g["tempo_agreement"], r["tempo_agreement"]),
        "key_agreement_vs_real_through_codec": ratio(g["key_agreement"], c["key_agreement"])}
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def log_mel_l1(pipe: MultiTrackPipeline, a: np.ndarray, b: np.ndarray) -> float:
    wav = torch.from_numpy(np.stack([a, b])).float()
    mel = mel_frames(pipe, wav)
    return float(np.abs(mel[0] - mel[1]).mean() * np.log(10) / 20)  # back to natural-log units


def following(pipe: MultiTrackPipeline, test: torch.Tensor, metas: list[dict], steps: int | None,
              **settings) -> dict:
    """Bass and drums given, guitar and piano generated: grid, key, and given stems against the seed;
    ``settings`` go to every ``arrange`` (e.g. ``resample=4``, ``reconstruction=1.0``)."""
    sr, names, k = pipe.sample_rate, pipe.stems, len(test)
    want = [s for s in ("guitar", "piano") if s in names]

    def stem(i, s):
        return test[i, names.index(s)].numpy()

    def arrange(i, seed):
        given = {s: stem(i, s) for s in ("bass", "drums")}
        return pipe.arrange(given, want=want, seed=seed, steps=steps, **settings).stems

    rows: dict[str, list] = {s: [] for s in want}
    for i in range(k):
        j = (i + 1) % k
        bpm = float(metas[i]["tempo"])
        bass, drums, other_bass = stem(i, "bass"), stem(i, "drums"), stem(j, "bass")
        if is_silent(drums) or is_silent(bass) or is_silent(other_bass):
            continue
        gen, reseeded, regiven = arrange(i, i), arrange(i, i + 100), arrange(j, i)
        key_bass, key_other = estimate_key(bass, sr), estimate_key(other_bass, sr)
        for s in want:
            truth = stem(i, s)
            if is_silent(truth):
                continue
            key_gen = estimate_key(gen[s], sr)
            rows[s].append({
                "grid_generated": music.grid_offset(gen[s], drums, bpm, sr),
                "grid_truth": music.grid_offset(truth, drums, bpm, sr),
                "key_is_given_bass": key_gen == key_bass,
                "key_is_other_bass": key_gen == key_other,
                "truth_key_is_given_bass": estimate_key(truth, sr) == key_bass,
                "change_with_seed": log_mel_l1(pipe, gen[s], reseeded[s]),
                "change_with_given": log_mel_l1(pipe, gen[s], regiven[s])})
    out = {}
    for s, r in rows.items():
        out[s] = {m: mean([row[m] for row in r]) for m in (r[0] if r else {})}
        out[s]["pairs"] = len(r)
        if r:
            lock = (0.25 - out[s]["grid_generated"]) / max(1e-6, 0.25 - out[s]["grid_truth"])
            out[s]["grid_lock_vs_truth"] = round(lock, 3)  # 1: as tight as the true part, 0: random onsets
    return out


def unprompted(pipe: MultiTrackPipeline, clips: int, steps: int | None) -> list[dict]:
    """The baseline of :func:`prompted`: the same seeds with no prompt (made once for every guidance)."""
    return [pipe.generate(seed=2000 + i, steps=steps).stems for i in range(clips)]


def prompted(pipe: MultiTrackPipeline, test: torch.Tensor, metas: list[dict], steps: int | None,
             plain: list[dict], guidance: float | None = None) -> dict:
    """Words and a reference: asked tempo and style against the ``plain`` clips, and condition's
    nearness to its own reference; and whether a prompt or a reference makes the stems play
    together better than no condition."""
    from mtldm_cli.data.captions import pace
    from mtldm_cli.data.compose import STYLES

    sr, k = pipe.sample_rate, len(test)
    styles = [st.name for st in STYLES]
    asked = [(str(m["style"]), round(float(m["tempo"]))) for m in metas]
    clips = [pipe.generate(f"{pace(bpm)} {style} song, at {bpm} BPM", seed=2000 + i, steps=steps,
                           guidance=guidance).stems for i, (style, bpm) in enumerate(asked)]
    tempo_ok = [music.tempo_within(music.tempo(c["drums"], sr), bpm) for c, (_, bpm) in zip(clips, asked)]
    plain_ok = [music.tempo_within(music.tempo(c["drums"], sr), bpm) for c, (_, bpm) in zip(plain, asked)]
    cond = pipe.conditioner
    with torch.no_grad():
        texts = cond.text([f"a {st} song" for st in styles])
        audio = cond.audio(torch.from_numpy(np.stack([np.sum(list(c.values()), 0) for c in clips])).float())
        picks = (audio @ texts.T).argmax(-1).tolist()
        refs = test.sum(1)
        outs = [pipe.condition(refs[i].numpy(), seed=3000 + i, steps=steps, guidance=guidance) for i in range(k)]
        out_emb = cond.audio(torch.from_numpy(np.stack([o.mix for o in outs])).float())
        sims = (out_emb @ cond.audio(refs).T).numpy()
    cond_ok = [music.tempo_within(music.tempo(o.stems["drums"], sr), bpm) for o, (_, bpm) in zip(outs, asked)]
    own = np.diag(sims)
    others = (sims.sum(1) - own) / max(1, k - 1)
    return {"clips": k,
            "tempo_within_8pct_prompted": mean(tempo_ok), "tempo_within_8pct_unprompted": mean(plain_ok),
            "style_zero_shot_accuracy": mean([styles[p] == st for p, (st, _) in zip(picks, asked)]),
            "style_chance": round(1 / len(styles), 4),
            "condition_cosine_own_reference": mean(own), "condition_cosine_other_references": mean(others),
            "condition_nearest_is_own": mean((sims.argmax(1) == np.arange(k)).astype(float)),
            "condition_nearest_chance": round(1 / k, 4),
            "condition_tempo_within_8pct_of_reference": mean(cond_ok),
            "together_prompted": summarise([clip_measures(c, sr) for c in clips], pipe.stems),
            "together_unprompted": summarise([clip_measures(c, sr) for c in plain], pipe.stems),
            "together_condition": summarise([clip_measures(o.stems, sr) for o in outs], pipe.stems)}


def speed(pipe: MultiTrackPipeline, test: torch.Tensor, repeats: int = 2) -> dict:
    """One `generate` of the segment, and one `arrange` of guitar and piano around the first test
    window's bass and drums, each with the model's defaults: best of ``repeats``."""
    runs, arranged = [], []
    given = {s: test[0, pipe.stems.index(s)].numpy() for s in ("bass", "drums")}
    want = [s for s in ("guitar", "piano") if s in pipe.stems]
    for i in range(repeats):
        t0 = time.perf_counter()
        out = pipe.generate(seed=i)
        runs.append({"total_s": round(time.perf_counter() - t0, 2), **out.info["timings"]})
        t0 = time.perf_counter()
        pipe.arrange(given, want=want, seed=i)
        arranged.append(round(time.perf_counter() - t0, 2))
    return {"seconds_of_audio": round(out.duration, 2), "threads": torch.get_num_threads(), "runs": runs,
            "best_total_s": min(r["total_s"] for r in runs), "arrange_s": arranged, "best_arrange_s": min(arranged),
            "arrange_options": pipe.sampling_options("arrange", seed=0).record()}


SECTIONS = ("speed", "round-trip", "arrangement", "generation", "together", "following", "prompted")


def measure(name: str, source: str, args, tracks: int) -> dict:
    """Every section of one model, on the same test and floor windows as the others."""
    from mtldm_cli.data.render import synthesize

    pipe = MultiTrackPipeline.from_pretrained(source, device="cpu")
    for folder, split in ((args.data, "test"), (args.train_data, "train")):
        if not folder.is_dir():
            synthesize(folder, tracks=max(tracks, 8), seconds=30.0, split=split, sample_rate=pipe.sample_rate)
    test, floor = windows(pipe, args.data, tracks), windows(pipe, args.train_data, tracks)
    report: dict = {"model": source, "model_source": pipe.source.source if pipe.source else None,
                    "conditioning": pipe.config.conditioning, "vocoder": pipe.config.vocoder, "tracks": len(test),
                    "seconds_each": pipe.config.audio.segment_seconds, "sampler": pipe.config.sampling.sampler,
                    "steps": args.steps or pipe.config.sampling.steps}
    todo = [x for x in SECTIONS if x not in args.skip and (not args.only or x in args.only)]
    metas = window_metas(pipe, args.data, tracks) if {"following", "prompted"} & set(todo) else []
    t0 = time.perf_counter()
    for section in todo:
        started = time.perf_counter()
        print(f"[{name}] {section}...", file=sys.stderr, flush=True)
        if section == "speed":
            report["speed"] = speed(pipe, test)
        elif section == "round-trip":
            report["round_trip"] = round_trip(pipe, test)
        elif section == "arrangement":
            report["arrangement"] = arrangement(pipe, test, ["bass", "guitar", "piano"], args.steps)
        elif section == "generation":
            default = f"{pipe.config.sampling.sampler}:{args.steps or pipe.config.sampling.steps}"
            samplers = args.samplers or list(dict.fromkeys([default, "ddim:25", "ddim:50"]))
            report["generation"] = generation(pipe, test, floor, len(test), samplers)
        elif section == "together":
            report["together"] = together(pipe, test, len(test))
        elif section == "following":
            report["following"] = following(pipe, test, metas, args.steps)
            for spec in args.arrange_settings:  # "sampler=ddim,resample=4": stronger conditioning to compare
                settings = {k: setting(v) for k, v in (kv.split("=") for kv in spec.split(","))}
                try:
                    report[f"following[{spec}]"] = following(pipe, test, metas, args.steps, **settings)
                except InputError as err:  # e.g. given_guidance on a UNet that only imputes
                    report[f"following[{spec}]"] = {"not_applicable": str(err)}
        elif section == "prompted" and pipe.conditional:
            plain = unprompted(pipe, len(metas), args.steps)
            report["prompted"] = prompted(pipe, test, metas, args.steps, plain)
            for g in args.prompt_guidance:  # classifier-free guidance scales to compare with the model's
                report[f"prompted[guidance={g}]"] = prompted(pipe, test, metas, args.steps, plain, guidance=g)
        report.setdefault("section_wall_s", {})[section] = round(time.perf_counter() - started, 1)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    return report


def setting(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, metavar="[NAME=]SOURCE",
                    help="a registry name or model folder, repeatable (default: demo)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mini-slakh" / "test")
    ap.add_argument("--train-data", type=Path, default=ROOT / "data" / "mini-slakh" / "train",
                    help="windows from here give the Frechet distance's floor (made if missing)")
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--quick", action="store_true", help="4 tracks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samplers", nargs="*", default=None,
                    help='"sampler:steps" to compare in the generation part (default: the model\'s, ddim:25, ddim:50)')
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--only", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--arrange-settings", nargs="*", default=[], metavar="K=V[,K=V]",
                    help="the following section again with these arrange settings, e.g. "
                         "sampler=ddim,resample=4 reconstruction=1.0")
    ap.add_argument("--prompt-guidance", nargs="*", type=float, default=[], metavar="G",
                    help="the prompted section again at these classifier-free guidance scales")
    args = ap.parse_args()
    tracks = 4 if args.quick else args.tracks
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    models = {}
    for spec in args.model or ["v1=demo-v1", "v2=demo"]:
        name, _, source = spec.rpartition("=")
        models[name or source] = source
    report = {**machine_report(), "data": str(args.data), "tracks": tracks,
              "models": {name: measure(name, source, args, tracks) for name, source in models.items()}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
