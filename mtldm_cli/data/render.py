"""Render composed songs stem by stem with a General MIDI SoundFont, and write mini-Slakh track folders.

Each stem is rendered on its own synthesizer at 44.1 kHz (the SoundFont's own rate, so nothing
aliases), resampled band-limited to the dataset rate, then all stems of a track get one common gain
and are quantised to 16-bit. The mix is the integer sum of the quantised stems, so ``mix.wav`` is
exactly the sum of the stem files, with no clipping anywhere.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from ..audio import is_silent, prepare_dir, resample_np, staged_dir
from ..errors import NAME_ONLY, DataError, InputError, OutputError
from ..version import __version__
from .compose import STEMS, Part, Song, compose

RENDER_RATE = 44100
PEAK = 0.9  # the loudest of any stem or the mix, as a fraction of full scale
SPLIT_SIZE = 1_000_000
SPLITS = {"train": 0, "validation": SPLIT_SIZE, "test": 2 * SPLIT_SIZE}  # first song seed of each split


def soundfont_path(path: Optional[os.PathLike] = None) -> Path:
    """The SoundFont to render with: ``path``, else ``$MTLDM_SOUNDFONT``, else pretty_midi's TimGM6mb.sf2."""
    if path is None and os.environ.get("MTLDM_SOUNDFONT"):
        path = Path(os.environ["MTLDM_SOUNDFONT"])
    if path is None:
        import pretty_midi

        path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SoundFont not found", "give an .sf2 file as {soundfont}", soundfont=NAME_ONLY)
    return path


def _synth(soundfont: Path):
    try:
        import tinysoundfont
    except ImportError:
        raise DataError("tinysoundfont is not installed", "run: pip install --no-deps tinysoundfont") from None
    synth = tinysoundfont.Synth(samplerate=RENDER_RATE)
    try:
        sfid = synth.sfload(str(soundfont))
    except Exception as e:  # tinysoundfont raises its own and plain exceptions on bad files
        raise DataError(f"{soundfont}: not a usable SoundFont ({e})", "give a valid .sf2 file") from None
    return synth, sfid


def render_part(part: Part, seconds: float, sample_rate: int, soundfont: Path) -> np.ndarray:
    """One part -> float32 mono ``[round(seconds * sample_rate)]``.

    Events are applied at their exact sample. Drum hits get no note-off: a kit plays its samples
    out, as drum channels do on hardware synthesizers.
    """
    synth, sfid = _synth(soundfont)
    chan = 9 if part.is_drum else 0
    synth.program_select(chan, sfid, 0, 0 if part.is_drum else part.program, is_drums=part.is_drum)
    total = round(seconds * RENDER_RATE)
    events = [(round(n.start * RENDER_RATE), 1, n.pitch, n.velocity) for n in part.notes]
    if not part.is_drum:
        events += [(round(n.end * RENDER_RATE), 0, n.pitch, 0) for n in part.notes]
    events.sort()
    out = np.zeros((total, 2), dtype=np.float32)
    pos = 0
    for at, on, pitch, velocity in events:
        at = min(at, total)
        if at > pos:
            out[pos:at] = np.frombuffer(synth.generate_simple(at - pos), dtype=np.float32).reshape(-1, 2)
            pos = at
        if on:
            synth.noteon(chan, pitch, velocity)
        else:
            synth.noteoff(chan, pitch)
    if pos < total:
        out[pos:] = np.frombuffer(synth.generate_simple(total - pos), dtype=np.float32).reshape(-1, 2)
    mono = resample_np(out.mean(axis=1), RENDER_RATE, sample_rate)
    n = round(seconds * sample_rate)
    return np.pad(mono, (0, max(0, n - mono.shape[0])))[:n].astype(np.float32)


def mix_down(stems: dict[str, np.ndarray], peak: float = PEAK) -> tuple[dict[str, np.ndarray], float]:
    """One gain for all stems, then 16-bit stems whose integer sum is the 16-bit mix (no clipping)."""
    loudest = max([float(np.abs(x).max()) for x in stems.values()] + [float(np.abs(sum(stems.values())).max())])
    gain = peak / loudest if loudest > 0 else 1.0
    out = {s: np.round(x * gain * 32767).astype(np.int16) for s, x in stems.items()}
    mix = np.sum([x.astype(np.int32) for x in out.values()], axis=0)
    out["mix"] = mix.astype(np.int16)  # |mix| <= peak * 32767 + one rounding step per stem
    return out, gain


def render_song(song: Song, sample_rate: int, soundfont: Path) -> tuple[dict[str, np.ndarray], float]:
    stems = {s: render_part(song.parts[s], song.seconds, sample_rate, soundfont) for s in STEMS}
    return mix_down(stems)


def track_name(song_seed: int) -> str:
    return f"Track{song_seed:07d}"


def song_seeds(split: str, seed: int, tracks: int) -> range:
    """The song seeds of a split: ``seed`` is an offset inside it; splits never share a seed."""
    if split not in SPLITS:
        raise InputError("{split}: unknown split", f"use one of: {', '.join(SPLITS)}", split=split)
    if seed < 0 or tracks < 0 or seed + tracks > SPLIT_SIZE:
        raise InputError(f"{{seed}} with {{tracks}}: past the {SPLIT_SIZE:,} songs of a split",
                         "use a smaller seed or fewer tracks", seed=seed, tracks=tracks)
    return range(SPLITS[split] + seed, SPLITS[split] + seed + tracks)


def write_track(folder: Path, song: Song, audio: dict[str, np.ndarray], gain: float, sample_rate: int,
                split: str, soundfont: Path, *, force: bool = False) -> None:
    """Write a track folder all-or-nothing: built in a hidden temp folder, renamed into place."""
    with staged_dir(folder) as tmp:
        for name, data in audio.items():
            sf.write(tmp / f"{name}.wav", data, sample_rate, subtype="PCM_16", format="WAV")
        song.to_midi().write(str(tmp / "song.mid"))
        meta = {"name": folder.name, "split": split, **song.meta(), "sample_rate": sample_rate,
                "samples": int(audio["mix"].shape[0]), "stems": list(STEMS), "gain": gain,
                "active": {s: _active_fraction(audio[s], sample_rate) for s in STEMS},
                "soundfont": soundfont.name, "generator": f"mtldm {__version__} data synth"}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        if folder.exists() and not force:
            raise _exists(folder)


def _exists(folder: Path) -> OutputError:
    return OutputError(f"{folder}: already exists", "pass {force} to overwrite, or {resume} to keep it",
                       force=True, resume=True)


def _active_fraction(x: np.ndarray, sample_rate: int, window: float = 0.5) -> float:
    """Share of half-second windows with sound (MSDM's mean-|x| >= 1.5e-5 test)."""
    hop = int(window * sample_rate)
    wins = [x[i:i + hop].astype(np.float32) / 32768 for i in range(0, len(x), hop)]
    return round(sum(not is_silent(w) for w in wins) / max(1, len(wins)), 3)


@dataclass
class SynthReport:
    out: Path
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seconds_of_audio: float = 0.0
    elapsed: float = 0.0

    def as_dict(self) -> dict:
        return {"out": str(self.out), "written": len(self.written), "kept": len(self.kept),
                "tracks": self.written + self.kept, "seconds_of_audio": round(self.seconds_of_audio, 2),
                "elapsed_s": round(self.elapsed, 3),
                "tracks_per_s": round(len(self.written) / self.elapsed, 3) if self.elapsed else None}


def _make_track(args) -> str:
    song_seed, out, seconds, sample_rate, split, soundfont, force = args
    song = compose(song_seed, seconds)
    audio, gain = render_song(song, sample_rate, soundfont)
    write_track(out / track_name(song_seed), song, audio, gain, sample_rate, split, soundfont, force=force)
    return track_name(song_seed)


def synthesize(out: os.PathLike, *, tracks: int, seconds: float, seed: int = 0, split: str = "train",
               sample_rate: int = 16000, soundfont: Optional[os.PathLike] = None, force: bool = False,
               resume: bool = False, jobs: int = 1,
               progress: Optional[Callable[[dict], None]] = None) -> SynthReport:
    """Compose and render ``tracks`` songs of ``split`` into ``out/TrackNNNNNNN/``.

    Existing track folders are an error, unless ``force`` (rewrite them) or ``resume`` (keep them:
    each was written whole, so a stopped run picks up where it was). ``progress`` gets
    ``{"i": index of the track just done, "total": tracks to make}``, like the samplers' callback.
    """
    if seconds <= 0 or tracks < 1:
        raise InputError("{tracks} and {seconds}: must be positive", tracks=tracks, seconds=seconds)
    if sample_rate < 8000 or sample_rate > RENDER_RATE:
        raise InputError(f"{{sample_rate}}: outside 8000..{RENDER_RATE} Hz", sample_rate=sample_rate)
    out = prepare_dir(Path(out))
    soundfont = soundfont_path(soundfont)
    _synth(soundfont)  # fail now on a missing synthesizer or a bad SoundFont, not in a worker
    seeds = song_seeds(split, seed, tracks)
    report = SynthReport(out)
    todo = []
    for s in seeds:
        folder = out / track_name(s)
        if folder.exists() and resume:
            _check_resumable(folder, seconds, sample_rate)
            report.kept.append(folder.name)
        elif folder.exists() and not force:
            raise _exists(folder)  # before any work; write_track checks again in case of a race
        else:
            todo.append((s, out, seconds, sample_rate, split, soundfont, force))
    started = time.perf_counter()
    for i, name in enumerate(_run(todo, jobs)):
        report.written.append(name)
        if progress:
            progress({"i": i, "total": len(todo)})
    report.elapsed = time.perf_counter() - started
    report.seconds_of_audio = seconds * len(report.written)
    return report


def _run(todo: list, jobs: int):
    if jobs <= 1 or len(todo) <= 1:
        yield from map(_make_track, todo)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: workers fork from a clean server that imported torch and this module once, instead
    # of forking a caller that may hold torch's threads (unsafe) or re-importing per worker (slow).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", __name__])
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        yield from pool.map(_make_track, todo)


def _check_resumable(folder: Path, seconds: float, sample_rate: int) -> None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        raise OutputError(f"{folder}: exists but is not a synthesized track (no readable meta.json)",
                          "remove it or pass {force}", force=True) from None
    if meta.get("seconds") != seconds or meta.get("sample_rate") != sample_rate:
        raise OutputError(f"{folder}: was made with {meta.get('seconds')} s at {meta.get('sample_rate')} Hz, "
                          f"not {seconds} s at {sample_rate} Hz", "use the same settings, another {out}, or {force}",
                          out=NAME_ONLY, force=True)
