"""``mtldm evaluate``: SI-SDR / SI-SDRi of estimated stems against references (MSDM protocol)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..audio import read_audio, resample_np
from ..errors import InputError
from ..metrics import evaluate_separation, mixture_mismatch
from .common import JobReport, JsonOpt, emit_json, err_console, guarded


def _stem_files(folder: Path, option: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{option} {folder}: not a directory", "give a folder of <stem>.wav files")
    files = {p.stem.lower(): p for p in sorted(folder.iterdir())
             if p.suffix.lower() in (".wav", ".flac") and p.stem.lower() != "mix"}
    if not files:
        raise InputError(f"{option} {folder}: holds no stem WAV/FLAC files", "give a folder of <stem>.wav files")
    return files


@guarded
def evaluate(
    est: Annotated[Path, typer.Option(help="Folder of estimated stems (<stem>.wav).")],
    ref: Annotated[Path, typer.Option(help="Folder of reference stems (<stem>.wav).")],
    mix: Annotated[Optional[Path], typer.Option(help="The mixture (default: REF/mix.wav, else the sum of the references).")] = None,
    window: Annotated[float, typer.Option(min=0.1, help="Window length in seconds.")] = 4.0,
    hop: Annotated[float, typer.Option(min=0.1, help="Window hop in seconds.")] = 2.0,
    json_out: JsonOpt = False,
) -> None:
    """Score separated stems against references: SI-SDRi and SI-SDR per stem.

    A batch: when --est holds folders (as a batch of separate writes), each EST/<job>/ is scored against REF/<job>/ (its mix.wav), one line per job and the mean SI-SDRi per stem at the end.

    MSDM protocol: 4 s windows with a 2 s hop, skipping windows where at most one reference stem is active (mean |x| < 1.5e-5); whole-signal SI-SDR beside it, and SI-SDRi over only the windows where each stem itself sounds.
    """
    pairs = _job_pairs(est, ref)
    if pairs is None:
        doc, warnings = _score(est, ref, mix, window, hop)
        if json_out:
            emit_json(doc)
        else:
            _print_table(doc["stems"], f"{est} vs {ref}")
        for w in warnings:
            err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
        return
    if mix is not None:
        raise InputError("--mix: one mixture cannot serve a batch", "put each mixture in its REF/<job>/mix.wav")
    report = JobReport(est, pairs, resume=False, json_out=json_out, quiet=False, done="scored")
    means: dict[str, list[float]] = {}

    def one(name: str) -> None:
        doc, warnings = _score(est / name, ref / name, None, window, hop)
        for stem, d in doc["stems"].items():
            if d["si_sdri"] is not None:
                means.setdefault(stem, []).append(d["si_sdri"])
        report.emit({"job": name, **doc})
        if not json_out:
            line = ", ".join(f"{s} {d['si_sdri']:.2f}" if d["si_sdri"] is not None else f"{s} nan" for s, d in doc["stems"].items())
            err_console.print(f"{name}: SI-SDRi (dB) {line}", soft_wrap=True)
        for w in warnings:
            err_console.print(f"[yellow]warning:[/] {name}: {w}", soft_wrap=True)

    for name in report.todo:
        report.run(name, functools.partial(one, name))
    mean = {s: round(sum(v) / len(v), 3) for s, v in means.items()}
    if mean and not json_out:
        err_console.print("mean SI-SDRi (dB): " + ", ".join(f"{s} {v:.2f}" for s, v in mean.items()), soft_wrap=True)
    report.close(extra={"mean_si_sdri": mean})


def _job_pairs(est: Path, ref: Path) -> list[str] | None:
    """A batch: ``est`` holds no stems but folders, each scored against ``ref``'s folder of that name."""
    if not est.is_dir() or any(p.suffix.lower() in (".wav", ".flac") for p in est.iterdir()):
        return None
    names = sorted(p.name for p in est.iterdir() if p.is_dir())
    if not names:
        return None
    missing = [n for n in names if not (ref / n).is_dir()]
    if missing:
        raise InputError(f"--ref {ref}: no reference folder for {', '.join(missing[:3])}", "give REF/<job>/ for every ESTIMATE/<job>/")
    return names


def _score(est: Path, ref: Path, mix: Path | None, window: float, hop: float) -> tuple[dict, list[str]]:
    """One folder of estimates against one of references: the JSON document and its warnings."""
    est_files, ref_files = _stem_files(est, "--est"), _stem_files(ref, "--ref")
    missing = sorted(set(ref_files) - set(est_files))
    if missing:
        raise InputError(f"--est {est}: no estimate for stem(s) {', '.join(missing)}", "separate them first")
    refs = {s: read_audio(p) for s, p in ref_files.items()}
    rates = {sr for _, sr in refs.values()}
    if len(rates) != 1:
        raise InputError(f"--ref {ref}: stems have different sample rates {sorted(rates)}", "resample them to one rate")
    sr = rates.pop()
    ref_wavs = {s: w for s, (w, _) in refs.items()}
    est_wavs = {s: resample_np(*read_audio(est_files[s]), sr) for s in ref_files}
    mix_path = mix or (ref / "mix.wav" if (ref / "mix.wav").is_file() else None)
    mix_wav = resample_np(*read_audio(mix_path), sr) if mix_path else None
    scores = evaluate_separation(est_wavs, ref_wavs, sr, mix_wav, window_s=window, hop_s=hop)
    warnings = []
    mismatch = mixture_mismatch(mix_wav, ref_wavs) if mix_wav is not None else None
    if mismatch is not None:
        warnings.append(f"{mix_path}: is not the sum of the reference stems (SI-SDR {mismatch:.1f} dB against their sum); "
                        "SI-SDRi is measured against this mixture as given")
    if all(d["windows"] == 0 for d in scores.values()):
        warnings.append("no window has two active stems; SI-SDRi is undefined (nan)")
    clean = {s: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()} for s, d in scores.items()}
    return {"sample_rate": sr, "mix": str(mix_path) if mix_path else "sum of references", "stems": clean,
            "warnings": warnings}, warnings


def _print_table(scores: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_style="bold")
    for col in ("stem", "SI-SDRi (dB)", "SI-SDR windows (dB)", "SI-SDR whole (dB)", "windows",
                "SI-SDRi where it sounds (dB)", "windows"):
        table.add_column(col, justify="left" if col == "stem" else "right")
    def num(v) -> str:
        return "nan" if v is None else f"{v:.2f}"

    for s, d in scores.items():
        table.add_row(s, num(d["si_sdri"]), num(d["si_sdr_windows"]), num(d["si_sdr"]), str(d["windows"]),
                      num(d["si_sdri_active"]), str(d["windows_active"]))
    from rich.console import Console

    Console().print(table)
