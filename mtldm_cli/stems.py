"""Stem names: which stem a file is, which stems a task gives, wants or keeps."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .audio import Audio, AudioLike
from .errors import NAME_ONLY, StemError

# Words that name a stem in the files DAWs and stem packs export (besides the stem's own name).
SYNONYMS = {
    "bass": {"basses", "bassline", "basslines", "bs", "ebass", "subbass", "bassgtr"},
    "drums": {"drum", "drm", "drms", "dr", "kit", "drumkit", "perc", "percussion", "beat", "beats", "kick", "snare",
              "hats", "hihat", "hh", "toms", "cymbals", "overheads", "oh"},
    "guitar": {"guitars", "gtr", "gtrs", "gt", "guit", "git", "egtr", "agtr"},
    "piano": {"pianos", "pno", "pn", "keys", "keyboard", "keyboards", "kbd", "rhodes", "epiano", "ep", "grand"},
}
_PHRASES = ((r"bass[\W_]*guitar", "bass"), (r"electric[\W_]*bass", "bass"), (r"drum[\W_]*kit", "drums"),
            (r"electric[\W_]*piano", "piano"), (r"acoustic[\W_]*guitar", "guitar"), (r"electric[\W_]*guitar", "guitar"))


def _words(name: str) -> list[str]:
    """``01 Bass``, ``Song_Bass``, ``SongBass``, ``bass-take2`` -> lowercase words, numbers dropped."""
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()
    for phrase, stem in _PHRASES:
        name = re.sub(phrase, stem, name)
    return [w for w in re.split(r"[^a-z]+", name) if w]


def stem_candidates(path: str | os.PathLike, stems: Sequence[str]) -> list[str]:
    """The stems a file's name could mean, in the model's order: a stem's name or a common synonym
    as a word of it (``01 Bass.wav``, ``Song_Keys.wav``, ``gtr2.wav``, ``bassline.wav``), else a
    word that begins one stem's name (``dr.wav``, ``b.wav``; three letters or more when the name has
    other words). Empty when nothing matches; several when the name is ambiguous."""
    words = _words(Path(path).stem)
    named = {s for w in words for s in _named_by(w, stems)}
    if not named:
        for w in words:
            begun = [s for s in stems if s.lower().startswith(w)]
            if len(begun) == 1 and (len(w) >= 3 or len(words) == 1):
                named.add(begun[0])
    return [s for s in stems if s in named]


def _named_by(word: str, stems: Sequence[str]) -> list[str]:
    """The stems ``word`` names: a stem's own name, or one of its synonyms."""
    return [s for s in stems if word == s.lower() or word in SYNONYMS.get(s.lower(), ())]


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
            found = stem_candidates(source, stems)
            if len(found) != 1:
                what = ("could be " + " or ".join(found)) if found else "cannot tell which stem this is"
                choices = found or list(stems)
                raise StemError(f"{source}: {what} from its name",
                                f"name its stem as {choices[0]}=<file> (CLI) or ({choices[0]!r}, file) (Python), "
                                f"one of: {', '.join(choices)}")
            stem = found[0]
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


def canonical(names: Iterable[str], stems: Sequence[str]) -> list[str]:
    """Stem names as the model spells them: ``keys`` is ``piano``, ``gtr`` is ``guitar``; others unchanged."""
    return [next(iter(_named_by(n, stems)), n) for n in (str(n).strip().lower() for n in names)]


def check_known(names: Iterable[str], stems: Sequence[str], param: str) -> None:
    for s in names:
        if s not in stems:
            raise StemError(f"{{{param}}}: unknown stem '{s}'", f"this model's stems are: {', '.join(stems)}",
                            **{param: NAME_ONLY})


def select(names: Iterable[str] | None, stems: Sequence[str], param: str = "stems") -> list[str]:
    """The stems a result keeps, in the model's order (all when ``names`` is None)."""
    if names is None:
        return list(stems)
    names = canonical(names, stems)
    check_known(names, stems, param)
    if not names:
        raise StemError(f"{{{param}}}: names no stem", f"name some of: {', '.join(stems)}", **{param: NAME_ONLY})
    return [s for s in stems if s in names]


def check_arrangement(given: Iterable[str], want: Iterable[str] | None, stems: Sequence[str]) -> tuple[list[str], list[str]]:
    """Validate an arrangement's stem names; returns (given, wanted) in the model's order.
    ``want`` None means every stem not given."""
    given = list(given)
    want = None if want is None else canonical(want, stems)
    if want is not None and not want:
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
