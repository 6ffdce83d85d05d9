"""Captions of a window of a track, in varied words, from what its ``meta.json`` knows: style, tempo
(in words and in BPM), key, meter, the instruments that sound in the window, its section and energy.

The wording is drawn from phrasings; the last ``HELD_OUT`` of each kind are kept for evaluation, so a
text encoder is scored on sentences it never saw in training.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping

from .compose import NOTE_NAMES, PROGRAMS, STYLES

HELD_OUT = 1
PACES = (("slow", 85), ("laid-back", 105), ("upbeat", 135), ("fast", 1e9))  # (word, below this BPM)
ENERGY = {"intro": "calm", "outro": "fading", "verse": "steady", "chorus": "energetic", "bridge": "building"}

# Each list's last HELD_OUT phrasings are for evaluation only.
OPENINGS = (
    "{pace} {style} song", "a {pace} {style} track", "{style} music, {pace}", "a {pace} {style} tune",
    "{pace} {style} piece", "{style} groove, {pace} feel",
)
TEMPO = ("at {bpm} BPM", "{bpm} beats per minute", "tempo {bpm}", "around {bpm} bpm", "with a pulse of {bpm} BPM")
KEY = ("in {key}", "key of {key}", "{key} key", "in the key of {key}", "written in {key}")
PLAYERS = ("with {list}", "featuring {list}", "played on {list}", "{list} playing", "performed by {list}")
SECTION = ("{energy} {section}", "the {section}, {energy}", "a {section} part, {energy}", "{section} section, {energy}")
METER = {3: ("in 3/4", "waltz time, 3/4", "three beats to the bar"), 4: ("in 4/4", "common time", "four beats to the bar")}


def pace(tempo: float) -> str:
    return next(word for word, below in PACES if tempo < below)


def sounding(meta: Mapping, start: float, seconds: float) -> list[str]:
    """The stems that play somewhere in [start, start + seconds): not silent in an overlapping section."""
    stems = list(meta.get("programs", {}))
    overlap = [s for s in meta.get("sections", []) if s["start"] < start + seconds and s["end"] > start]
    if not overlap:
        return stems
    return [stem for stem in stems if any(stem not in s.get("silent", []) for s in overlap)]


def section_at(meta: Mapping, start: float, seconds: float) -> str:
    """The section that covers most of the window."""
    best, most = "", 0.0
    for s in meta.get("sections", []):
        cover = min(s["end"], start + seconds) - max(s["start"], start)
        if cover > most:
            best, most = s["name"], cover
    return best


def caption(meta: Mapping, start: float, seconds: float, rng: random.Random, *, held_out: bool = False) -> str:
    """One caption of the window, its phrasing and clause order drawn from ``rng``."""

    def pick(options):
        options = options[-HELD_OUT:] if held_out else options[:-HELD_OUT]
        return rng.choice(options)

    tempo, style = float(meta["tempo"]), str(meta["style"])
    beats = int(str(meta.get("time_signature", "4/4")).split("/")[0])
    programs = meta.get("programs", {})
    names = [programs[s]["instrument"] if not programs[s].get("is_drum") else "drums"
             for s in sounding(meta, start, seconds)]
    rng.shuffle(names)
    players = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else (names[0] if names else "")
    section = section_at(meta, start, seconds)
    clauses = [pick(TEMPO).format(bpm=round(tempo)), pick(KEY).format(key=meta["key"])]
    if players:
        clauses.append(pick(PLAYERS).format(list=players))
    if section:
        clauses.append(pick(SECTION).format(section=section, energy=ENERGY.get(section, "steady")))
    if beats in METER and (beats != 4 or rng.random() < 0.3):
        clauses.append(pick(METER[beats]))
    rng.shuffle(clauses)
    keep = clauses[: rng.randint(max(1, len(clauses) - 2), len(clauses))]
    text = ", ".join([pick(OPENINGS).format(pace=pace(tempo), style=style), *keep])
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def vocabulary_corpus() -> Iterator[str]:
    """Every word a caption can hold, in sentences, for building a tokenizer (held-out phrasings too:
    a word of them must tokenise, it just never appears in a training caption)."""
    instruments = {name for family in PROGRAMS.values() for name in family.values()} | {"drums"}
    keys = [f"{n} {m}" for n in NOTE_NAMES for m in ("major", "minor")]
    for template in (*OPENINGS, *TEMPO, *KEY, *PLAYERS, *SECTION, *METER[3], *METER[4]):
        for style in [s.name for s in STYLES]:
            for word, _ in PACES:
                yield template.format(pace=word, style=style, bpm=60, key=keys[0], list="drums",
                                      section="verse", energy="steady")
    for bpm in range(40, 241):
        yield f"at {bpm} BPM"
    yield from keys
    yield from instruments
    for section, energy in ENERGY.items():
        yield f"{energy} {section}"
