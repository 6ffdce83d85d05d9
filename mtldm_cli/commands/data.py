"""``mtldm data synth|check``: make the synthetic mini-Slakh, and check a dataset folder before training."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import emit_json, ForceOpt, JsonOpt, QuietOpt, err_console, guarded, progress_callback

app = typer.Typer(name="data", help="Multi-track datasets: synthesize a Slakh-like one, check any.",
                  no_args_is_help=True)


class Split(str, Enum):
    train = "train"
    validation = "validation"
    test = "test"


class LayoutName(str, Enum):
    auto = "auto"
    stems = "stems"
    slakh = "slakh"


@app.command()
@guarded
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write TrackNNNNNNN/ folders into.")],
    tracks: Annotated[int, typer.Option(min=1, help="How many tracks to make.")] = 10,
    seconds: Annotated[float, typer.Option(min=1.0, help="Length of each track.")] = 30.0,
    seed: Annotated[int, typer.Option(min=0, help="First song of the split (song seed = split start + seed + i).")] = 0,
    split: Annotated[Split, typer.Option(help="Which split's seeds to use; splits never share a song.")] = Split.train,
    sample_rate: Annotated[int, typer.Option(help="Stem rate in Hz (22050 for MSDM's Slakh).")] = 16000,
    soundfont: Annotated[Optional[Path], typer.Option(help="General MIDI .sf2 (default: pretty_midi's TimGM6mb).")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Keep track folders already written; make the rest.")] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compose and render Slakh-like tracks: bass/drums/guitar/piano WAVs, their exact mix, MIDI and meta.json.

    Each track is one seed: key, tempo, meter, sections and chords shared by all four parts, rendered stem by stem with a General MIDI SoundFont. meta.json holds a text caption for conditioning.
    """
    from ..data.render import synthesize

    with progress_callback("rendering", quiet) as progress:
        report = synthesize(out, tracks=tracks, seconds=seconds, seed=seed, split=split.value,
                            sample_rate=sample_rate, soundfont=soundfont, force=force, resume=resume,
                            jobs=jobs, progress=progress)
    summary = report.as_dict()
    if json_out:
        emit_json(dict(summary))
    elif not quiet:
        kept = f", kept {len(report.kept)} already there" if report.kept else ""
        speed = f" ({summary['tracks_per_s']} tracks/s)" if summary["tracks_per_s"] else ""
        err_console.print(f"wrote {len(report.written)} tracks to {out}{kept} in {report.elapsed:.1f} s{speed}",
                          soft_wrap=True)


@app.command()
@guarded
def check(
    root: Annotated[Path, typer.Argument(help="A folder of track folders (ours, MSDM's Slakh, Slakh2100, your own).")],
    layout: Annotated[LayoutName, typer.Option(help="stems: <stem>.wav per track; slakh: stems/SYY.flac + metadata.yaml.")] = LayoutName.auto,
    stem_map: Annotated[Optional[list[str]], typer.Option("--stem-map", help="STEM=NAME[,NAME...]: file names (globs) that make a stem, e.g. guitar=gtr*,rhythm.")] = None,
    sample_rate: Annotated[int, typer.Option(help="Rate the segments are resampled to.")] = 16000,
    segment: Annotated[float, typer.Option(min=0.1, help="Segment length in seconds.")] = 10.24,
    json_out: JsonOpt = False,
) -> None:
    """Say which tracks a training run would use, how many segments they give, and why others are skipped."""
    import logging

    from ..data.datasets import StemDataset, parse_stem_map

    log = logging.getLogger("mtldm.data")
    log.disabled = True  # the skipped tracks are reported below instead
    try:
        ds = StemDataset(root, sample_rate=sample_rate, segment_seconds=segment, layout=layout.value,
                         stem_map=parse_stem_map(stem_map or []), random_shift=False)
    finally:
        log.disabled = False
    hours = sum(t.seconds for t in ds.tracks) / 3600
    missing = {s: sum(s in t.missing for t in ds.tracks) for s in ds.stems}
    if json_out:
        emit_json({"root": str(root), "tracks": len(ds.tracks), "segments": len(ds),
                   "hours": round(hours, 4), "tracks_missing_stem": missing,
                   "skipped": [{"track": t, "why": w} for t, w in ds.skipped]})
        return
    err_console.print(f"{root}: {len(ds.tracks)} tracks, {len(ds)} segments of {segment:g} s, {hours:.2f} h; "
                      f"tracks without a stem: {', '.join(f'{s} {n}' for s, n in missing.items())}", soft_wrap=True)
    for track, why in ds.skipped:
        err_console.print(f"[yellow]skipped[/] {track}: {why}", soft_wrap=True)
