"""Multi-track datasets: folders of track folders cut into fixed-length segments of all stems.

Three on-disk layouts are read, per track folder:

- ``stems``: one audio file per stem, named for it (``bass.wav drums.wav ...``): our mini-Slakh,
  MSDM's Slakh2100 (``slakh2100/train/Track00001/bass.wav``), or a user's own folders, whose file
  names a ``stem_map`` ties to our stems (several files for one stem are summed).
- ``slakh``: Slakh2100 as released, ``TrackXXXXX/stems/SYY.flac`` and ``metadata.yaml``, whose
  ``inst_class`` (Bass, Drums, Guitar, Piano) picks the stem; other classes are left out, as MSDM did.

Stems are never normalised, so the mix of a segment is the sum of its stems. A stem with no file in
a track is silence, as in MSDM's evaluation. Tracks that cannot be used are skipped with a logged
warning and counted in ``dataset.skipped``; a long run never stops for one damaged file.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from ..audio import resample
from ..config import DEFAULT_STEMS, AudioConfig
from ..errors import DataError
from ..names import safe_component

log = logging.getLogger("mtldm.data")

Layout = Literal["auto", "stems", "slakh"]
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
SLAKH_CLASSES = {"Bass": "bass", "Drums": "drums", "Guitar": "guitar", "Piano": "piano"}
SEGMENT_SECONDS = AudioConfig().segment_seconds


@dataclass
class Track:
    """One usable track: its stem files (possibly several per stem), length and rate at the source."""

    name: str
    path: Path
    files: dict[str, list[Path]]
    frames: int
    sample_rate: int
    caption: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def missing(self) -> list[str]:
        return [s for s, f in self.files.items() if not f]


@dataclass
class Scan:
    tracks: list[Track] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (track folder, why)

    def skip(self, folder: Path, why: str) -> None:
        log.warning("skipping %s: %s", folder, why)
        self.skipped.append((str(folder), why))


def parse_stem_map(items: Sequence[str]) -> dict[str, list[str]]:
    """``["bass=bass,bass_di", "guitar=gtr*"]`` -> ``{"bass": ["bass", "bass_di"], "guitar": ["gtr*"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        stem, sep, names = item.partition("=")
        if not sep or not stem.strip() or not names.strip():
            raise DataError("{stem_map}: expected STEM=NAME[,NAME...]", "e.g. guitar=gtr,gtr_*", stem_map=item)
        out.setdefault(stem.strip().lower(), []).extend(n.strip() for n in names.split(",") if n.strip())
    return out


def scan(root: os.PathLike, *, stems: Sequence[str] = DEFAULT_STEMS, layout: Layout = "auto",
         stem_map: Optional[Mapping[str, Sequence[str]]] = None, min_seconds: float = SEGMENT_SECONDS) -> Scan:
    """Find the usable tracks under ``root`` (a folder of track folders) and why others were left out."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder", "give a folder of track folders")
    unknown = set(stem_map or {}) - set(stems)
    if unknown:
        raise DataError(f"stem map names unknown stems: {', '.join(sorted(unknown))}",
                        f"the stems are: {', '.join(stems)}")
    stem_map = {s: list((stem_map or {}).get(s, [s])) for s in stems}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    result = Scan()
    for folder in folders:
        kind = layout if layout != "auto" else ("slakh" if (folder / "metadata.yaml").is_file() else "stems")
        try:
            files = _slakh_files(folder, stems) if kind == "slakh" else _stem_files(folder, stem_map)
            track = _check(folder, files, min_seconds)
        except _Skip as e:
            result.skip(folder, str(e))
            continue
        result.tracks.append(track)
    if not result.tracks:
        hint = ("it holds split folders; give one of them, e.g. " + str(root / "train")
                if any((root / s).is_dir() for s in ("train", "validation", "test"))
                else "expected TrackX/bass.wav ... (our or MSDM's layout) or Slakh's TrackX/stems + metadata.yaml")
        why = f" ({len(result.skipped)} skipped, first: {result.skipped[0][1]})" if result.skipped else ""
        raise DataError(f"{root}: no usable track folders{why}", hint)
    return result


class _Skip(Exception):
    pass


def _stem_files(folder: Path, stem_map: Mapping[str, Sequence[str]]) -> dict[str, list[Path]]:
    audio = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    files = {s: [p for p in audio if any(fnmatch.fnmatch(p.stem.lower(), pat.lower()) for pat in pats)]
             for s, pats in stem_map.items()}
    claimed: dict[Path, str] = {}
    for s, paths in files.items():
        for p in paths:
            if p in claimed:
                raise _Skip(f"{p.name} matches both {claimed[p]} and {s} in the stem map")
            claimed[p] = s
    if not claimed:
        names = ", ".join(p.name for p in audio[:4]) or "no audio files"
        raise _Skip(f"no stem files (found: {names}); map file names to stems with a stem map")
    return files


def _slakh_files(folder: Path, stems: Sequence[str]) -> dict[str, list[Path]]:
    import yaml

    if not (folder / "metadata.yaml").is_file():
        raise _Skip("no metadata.yaml (not Slakh2100's layout)")
    try:
        meta = yaml.safe_load((folder / "metadata.yaml").read_text())
        entries = meta["stems"]
        audio_dir_name = str(meta.get("audio_dir", "stems"))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise _Skip(f"metadata.yaml is unreadable ({type(e).__name__}: {e})") from None
    for name in (audio_dir_name, *map(str, entries)):  # they become paths: plain names only, never ../
        if safe_component(name, "") != name:
            raise _Skip(f"metadata.yaml names {name!r}, which is not a plain file name")
    audio_dir = folder / audio_dir_name
    files: dict[str, list[Path]] = {s: [] for s in stems}
    for sid, info in sorted(entries.items()):
        stem = SLAKH_CLASSES.get((info or {}).get("inst_class", ""))
        if stem not in files or not info.get("audio_rendered", True):
            continue
        found = [audio_dir / f"{sid}{ext}" for ext in AUDIO_EXTENSIONS if (audio_dir / f"{sid}{ext}").is_file()]
        if not found:
            raise _Skip(f"metadata.yaml lists {sid} ({info['inst_class']}) but {audio_dir.name}/{sid}.flac is missing")
        files[stem].append(found[0])
    if not any(files.values()):
        raise _Skip(f"none of its stems is {', '.join(c for c, s in SLAKH_CLASSES.items() if s in stems)}")
    return files


def _check(folder: Path, files: dict[str, list[Path]], min_seconds: float) -> Track:
    infos = {}
    for paths in files.values():
        for p in paths:
            try:
                infos[p] = sf.info(str(p))
            except (sf.LibsndfileError, RuntimeError) as e:
                raise _Skip(f"{p.name} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    rates = {i.samplerate for i in infos.values()}
    if len(rates) > 1:
        raise _Skip(f"stems at different sample rates ({', '.join(f'{p.name} {i.samplerate}' for p, i in infos.items())})")
    lengths = {i.frames for i in infos.values()}
    if len(lengths) > 1:
        raise _Skip(f"stems of unequal length ({', '.join(f'{p.name} {i.frames}' for p, i in infos.items())} samples)")
    rate, frames = rates.pop(), lengths.pop()
    if frames / rate < min_seconds:
        raise _Skip(f"shorter than a segment ({frames / rate:.2f} s < {min_seconds:.2f} s)")
    return Track(folder.name, folder, files, frames, rate, _caption(folder))


def _caption(folder: Path) -> str:
    try:
        return str(json.loads((folder / "meta.json").read_text()).get("caption", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def read_segment(track: Track, stems: Sequence[str], start: float, seconds: float, sample_rate: int):
    """``[len(stems), round(seconds * sample_rate)]`` float32 tensor of the track from ``start`` seconds.

    Only the needed frames are read (plus a few for the resampler's edges); several files of one
    stem are summed; a stem with no file is silence.
    """
    n = round(seconds * sample_rate)
    margin = 64 if track.sample_rate != sample_rate else 0
    first = max(0, math.floor(start * track.sample_rate) - margin)
    last = min(track.frames, math.ceil((start + seconds) * track.sample_rate) + margin)
    lead = round((start * track.sample_rate - first) * sample_rate / track.sample_rate)
    out = torch.zeros(len(stems), n)
    for i, stem in enumerate(stems):
        for path in track.files.get(stem, []):
            data, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
            wav = resample(torch.from_numpy(data.mean(axis=1)), track.sample_rate, sample_rate)[lead:lead + n]
            out[i, : wav.shape[0]] += wav
    if not torch.isfinite(out).all():
        raise ValueError("NaN or infinite samples")
    return out


class StemDataset(Dataset):
    """Segments of all stems of every usable track, for training and evaluation.

    Each track gives ``floor(length / segment)`` segments that tile it from a shift drawn once per
    track and epoch (uniform over the spare tail; ``random_shift=False`` starts at 0), so an epoch
    sees every part of a track without overlap. Items are dicts: ``stems [S, N]``, ``mix [N]`` (their
    sum), ``track``, ``start`` (seconds) and ``caption`` (from our ``meta.json``; empty elsewhere).
    """

    def __init__(self, root: os.PathLike, *, stems: Sequence[str] = DEFAULT_STEMS, sample_rate: int = 16000,
                 segment_seconds: float = SEGMENT_SECONDS, layout: Layout = "auto",
                 stem_map: Optional[Mapping[str, Sequence[str]]] = None, random_shift: bool = True, seed: int = 0):
        self.stems, self.sample_rate, self.segment_seconds = tuple(stems), sample_rate, segment_seconds
        self.random_shift, self.seed, self.epoch = random_shift, seed, 0
        found = scan(root, stems=self.stems, layout=layout, stem_map=stem_map, min_seconds=segment_seconds)
        self.tracks, self.skipped = found.tracks, found.skipped
        self._bad: set[int] = set()
        counts = [int(t.seconds // segment_seconds) for t in self.tracks]
        self._ends = np.cumsum(counts)

    def leave_out(self, k: int, why: str) -> None:
        """Never draw track ``k`` again (an item that lands on it takes the next track's first segment)."""
        if k not in self._bad:
            self._bad.add(k)
            log.warning("skipping %s: %s", self.tracks[k].path, why)
            self.skipped.append((str(self.tracks[k].path), why))

    def set_epoch(self, epoch: int) -> None:
        """Draw new shifts (call once per epoch, as with a DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, index: int) -> tuple[int, float]:
        """Item -> (track index, start in seconds)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self._ends, index, side="right"))
        j = index - (int(self._ends[k - 1]) if k else 0)
        track = self.tracks[k]
        spare = track.seconds - (int(track.seconds // self.segment_seconds)) * self.segment_seconds
        shift = 0.0
        if self.random_shift and spare > 0:
            rng = np.random.default_rng((self.seed, self.epoch, k))
            shift = float(rng.uniform(0, spare))
        return k, j * self.segment_seconds + shift

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """An item; an ``(index, epoch)`` pair takes that epoch's shifts, so a sampler can drive
        them even when items are read in DataLoader worker processes."""
        if isinstance(index, tuple):
            index, epoch = index
            self.set_epoch(epoch)
        for _attempt in range(len(self.tracks)):
            k, start = self.locate(index)
            if k not in self._bad:
                track = self.tracks[k]
                try:
                    stems = read_segment(track, self.stems, start, self.segment_seconds, self.sample_rate)
                except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
                    self.leave_out(k, f"unreadable at {start:.2f} s ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0] if str(e) else ''})")
                else:
                    return {"stems": stems, "mix": stems.sum(0), "track": track.name, "start": start,
                            "caption": track.caption}
            index = int(self._ends[k]) % len(self)  # the first segment of the next track
        raise DataError("every track of the dataset failed to read", "check the files with: mtldm data check")
