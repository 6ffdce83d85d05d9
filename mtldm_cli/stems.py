"""Stem names: which stem a file is, which stems a task gives, wants or keeps."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .audio import Audio, AudioLike
from .errors import NAME_ONLY, StemError


def stem_from_filename(path: str | os.PathLike, stems: Sequence[str]) -> str | None:
    """``bass.wav``, ``bass_take2.flac``, or a unique abbreviation such as ``b.wav`` or ``dr.wav``."""
    name = Path(path).stem.lower()
    exact = [s for s in stems if re.fullmatch(rf"{re.escape(s)}([\W_].*)?", name)]
    if exact:
        return exact[0]
    prefix = [s for s in stems if s.startswith(name)]
    return prefix[0] if len(prefix) == 1 else None


def name_given(given: Mapping[str, AudioLike] | Sequence[Any], stems: Sequence[str]) -> dict[str, AudioLike]:
    """``given`` as ``{stem: audio}``: a mapping as it is, or a sequence of paths or loaded
    :class:`Audio` (the stem read from the file name) and ``(stem, audio)`` pairs."""
    if isinstance(given, Mapping):
        return dict(given)
    named: dict[str, AudioLike] = {}
    for item in given:
        if isinstance(item, tuple):
            stem, audio = item
        else:
            audio = item
            source = item.name if isinstance(item, Audio) else item
            if not isinstance(source, (str, os.PathLike)):
                raise StemError("{given}: an array has no file name to tell its stem by",
                                "pass a mapping {stem: audio} or (stem, audio) pairs", given=NAME_ONLY)
            stem = stem_from_filename(source, stems)
            if stem is None:
                raise StemError(f"{source}: cannot tell which stem this is from its name",
                                f"name it explicitly (this model's stems are: {', '.join(stems)})")
        stem = str(stem).strip().lower()
        if stem in named:
            raise StemError(f"stem '{stem}' is given twice ({_label(named[stem])} and {_label(audio)})",
                            "give each stem once")
        named[stem] = audio
    return named


def _label(audio: AudioLike) -> str:
    if isinstance(audio, Audio):
        return audio.name
    return str(audio) if isinstance(audio, (str, os.PathLike)) else "an array"


def check_known(names: Iterable[str], stems: Sequence[str], param: str) -> None:
    for s in names:
        if s not in stems:
            raise StemError(f"{{{param}}}: unknown stem '{s}'", f"this model's stems are: {', '.join(stems)}",
                            **{param: NAME_ONLY})


def select(names: Iterable[str] | None, stems: Sequence[str], param: str = "stems") -> list[str]:
    """The stems a result keeps, in the model's order (all when ``names`` is None)."""
    if names is None:
        return list(stems)
    names = list(names)
    check_known(names, stems, param)
    if not names:
        raise StemError(f"{{{param}}}: names no stem", f"name some of: {', '.join(stems)}", **{param: NAME_ONLY})
    return [s for s in stems if s in names]


def check_arrangement(given: Iterable[str], want: Iterable[str] | None, stems: Sequence[str]) -> tuple[list[str], list[str]]:
    """Validate an arrangement's stem names; returns (given, wanted) in the model's order.
    ``want`` None means every stem not given."""
    given = list(given)
    if want is not None and not list(want):
        raise StemError("{want}: names no stem", f"name some of: {', '.join(s for s in stems if s not in given)}",
                        want=NAME_ONLY)
    check_known(given, stems, "given")
    check_known(want or [], stems, "want")
    if not given:
        raise StemError("no stem given", "give at least one stem to arrange around, or use generate")
    want = [s for s in stems if s not in given] if want is None else list(want)
    both = [s for s in want if s in given]
    if both:
        raise StemError(f"stem '{both[0]}' is both given and wanted", "drop it from {want} or from {given}",
                        want=NAME_ONLY, given=NAME_ONLY)
    if not want:
        raise StemError("nothing left to generate: every stem is given", "leave out a stem, or name it in {want}",
                        want=NAME_ONLY)
    order = list(stems).index
    return sorted(set(given), key=order), sorted(set(want), key=order)
