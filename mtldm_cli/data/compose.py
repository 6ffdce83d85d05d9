"""A procedural composer for Slakh-like four-stem songs (bass, drums, guitar, piano).

A song is drawn from one seed: a style (tempo range, instruments, how each part plays), a key and
mode, a meter, a form of sections with a chord progression each, then one part per stem over that
shared harmony. Parts are note lists in seconds, humanised in timing and velocity, so the MIDI file
and the rendered audio are the same music. Nothing here touches audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STEMS = ("bass", "drums", "guitar", "piano")
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

# Progressions as 0-based scale degrees; the common ones of pop, rock and jazz.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 4, 3), (5, 3, 0, 4), (0, 3, 0, 4), (0, 0, 3, 4),
              (3, 0, 4, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 2, 6, 3), (0, 0, 5, 4)),
}

# General MIDI programs per stem family, with the words a caption uses for them.
PROGRAMS = {
    "bass": {32: "acoustic bass", 33: "fingered bass", 34: "picked bass", 35: "fretless bass", 36: "slap bass",
             38: "synth bass"},
    "guitar": {24: "nylon-string guitar", 25: "steel-string guitar", 26: "jazz guitar", 27: "clean electric guitar",
               28: "muted electric guitar", 29: "overdriven guitar", 30: "distorted guitar"},
    "piano": {0: "grand piano", 1: "bright piano", 2: "electric grand", 3: "honky-tonk piano",
              4: "electric piano", 5: "FM electric piano", 7: "clavinet"},
}

KICK, RIM, SNARE, HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 37, 38, 42, 44, 46, 49, 51
TOMS = (50, 48, 47, 45, 43)
STAGES = ("identity", "form", "drums", "bass", "guitar", "piano", "performance")


@dataclass(frozen=True)
class Style:
    name: str
    tempo: tuple[int, int]
    modes: tuple[str, ...]
    meters: tuple[int, ...]
    bass: tuple[int, ...]
    guitar: tuple[int, ...]
    piano: tuple[int, ...]
    drums: str
    bass_play: tuple[str, ...]
    guitar_play: tuple[str, ...]
    piano_play: tuple[str, ...]
    swing: float = 0.5  # where the off-beat eighth falls, as a fraction of a beat
    sevenths: bool = False


STYLES = (
    Style("rock", (100, 150), ("major", "minor"), (4,), (33, 34), (29, 30, 27), (0, 1),
          "rock", ("eighths", "kick"), ("strum", "power"), ("block", "comp")),
    Style("pop", (88, 128), ("major", "minor"), (4, 4, 3), (33, 34, 38), (25, 27, 24), (0, 1, 4),
          "pop", ("kick", "root_fifth"), ("strum", "arpeggio"), ("comp", "block", "arpeggio")),
    Style("funk", (92, 118), ("minor", "major"), (4,), (36, 33, 38), (28, 27), (4, 5, 7),
          "funk", ("funk",), ("chank",), ("comp",), swing=0.55, sevenths=True),
    Style("ballad", (66, 88), ("major", "minor"), (4, 3), (32, 33, 35), (24, 25, 27), (0, 2, 4),
          "ballad", ("whole", "root_fifth"), ("arpeggio",), ("arpeggio", "block")),
    Style("jazz", (96, 160), ("major", "minor"), (4,), (32, 35), (26,), (0, 4),
          "swing", ("walking",), ("comp_jazz",), ("comp",), swing=0.66, sevenths=True),
    Style("country", (96, 140), ("major",), (4,), (32, 33), (25, 24), (3, 0),
          "train", ("root_fifth",), ("strum", "arpeggio"), ("comp", "block")),
    Style("metal", (120, 160), ("minor",), (4,), (34, 33), (30, 29), (1, 0),
          "metal", ("eighths",), ("power",), ("block",)),
)

FORMS = (
    ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
    ("verse", "chorus", "verse", "chorus", "outro"),
    ("intro", "verse", "verse", "chorus", "bridge", "chorus"),
    ("chorus", "verse", "chorus", "bridge", "chorus"),
)


@dataclass
class Note:
    pitch: int
    start: float
    end: float
    velocity: int


@dataclass
class Part:
    stem: str
    program: int
    is_drum: bool
    notes: list[Note] = field(default_factory=list)
    playing: str = ""

    @property
    def instrument(self) -> str:
        return "drum kit" if self.is_drum else PROGRAMS[self.stem][self.program]


@dataclass
class Chord:
    bar: int
    start: float
    end: float
    root: int  # pitch class
    pitches: tuple[int, ...]  # pitch classes, root first
    symbol: str


@dataclass
class Section:
    name: str
    first_bar: int
    bars: int
    start: float
    end: float
    silent: tuple[str, ...]


@dataclass
class Song:
    seed: int
    seconds: float
    style: str
    tonic: int
    mode: str
    tempo: float
    beats_per_bar: int
    sections: list[Section]
    chords: list[Chord]
    parts: dict[str, Part]

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    @property
    def caption(self) -> str:
        pace = ("slow" if self.tempo < 85 else "laid-back" if self.tempo < 105
                else "upbeat" if self.tempo < 135 else "fast")
        meter = " 3/4" if self.beats_per_bar == 3 else ""
        return (f"{pace}{meter} {self.style} in {self.key} at {round(self.tempo)} BPM with "
                f"{self.parts['guitar'].instrument}, {self.parts['piano'].instrument} "
                f"and {self.parts['bass'].instrument}")

    def meta(self) -> dict:
        return {
            "seed": self.seed, "seconds": self.seconds, "caption": self.caption, "style": self.style,
            "key": self.key, "tempo": round(self.tempo, 2), "time_signature": f"{self.beats_per_bar}/4",
            "programs": {s: {"program": p.program, "is_drum": p.is_drum, "instrument": p.instrument,
                             "playing": p.playing, "notes": len(p.notes)} for s, p in self.parts.items()},
            "sections": [{"name": s.name, "start": round(s.start, 4), "end": round(min(s.end, self.seconds), 4),
                          "bars": s.bars, "silent": list(s.silent)} for s in self.sections],
            "chords": [{"bar": c.bar, "start": round(c.start, 4), "symbol": c.symbol} for c in self.chords
                       if c.start < self.seconds],
        }

    def to_midi(self):
        """The song as a ``pretty_midi.PrettyMIDI`` (one instrument per stem, drums on channel 10)."""
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=self.tempo)
        pm.time_signature_changes.append(pretty_midi.TimeSignature(self.beats_per_bar, 4, 0.0))
        pm.key_signature_changes.append(
            pretty_midi.KeySignature(self.tonic + (12 if self.mode == "minor" else 0), 0.0))
        for stem, part in self.parts.items():
            inst = pretty_midi.Instrument(program=part.program, is_drum=part.is_drum, name=stem)
            inst.notes = [pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start, end=n.end)
                          for n in part.notes]
            pm.instruments.append(inst)
        return pm


def chord_symbol(root: int, pitches: tuple[int, ...]) -> str:
    third, fifth = (pitches[1] - root) % 12, (pitches[2] - root) % 12
    quality = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}.get((third, fifth), "?")
    if len(pitches) > 3:
        seventh = (pitches[3] - root) % 12
        quality = {("", 11): "maj7", ("", 10): "7", ("m", 10): "m7", ("dim", 10): "m7b5",
                   ("dim", 9): "dim7"}.get((quality, seventh), quality + "7")
    return NOTE_NAMES[root] + quality


def diatonic_chord(tonic: int, mode: str, degree: int, sevenths: bool) -> tuple[int, tuple[int, ...]]:
    """Stack scale thirds on ``degree``; minor keys take a major V (harmonic minor), as songs do."""
    scale = list(SCALES[mode])
    if mode == "minor" and degree == 4:
        scale[6] = 11
    size = 4 if sevenths else 3
    pcs = tuple((tonic + scale[(degree + 2 * i) % 7]) % 12 for i in range(size))
    return pcs[0], pcs


class _Composer:
    def __init__(self, seed: int, seconds: float):
        self.seed, self.seconds = seed, seconds

    # ----- choices -------------------------------------------------------------------------------
    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    # ----- structure -----------------------------------------------------------------------------
    def _stream(self, stage: str, *sub: int) -> None:
        """Each stage draws from its own stream, so the song's identity (style, key, tempo,
        instruments) does not depend on its length, and a longer render begins like a shorter one."""
        self.rng = np.random.default_rng([self.seed, STAGES.index(stage), *sub])

    def compose(self) -> Song:
        self._stream("identity")
        st = self.style = self.pick(STYLES)
        self.mode = self.pick(st.modes)
        self.tonic = int(self.rng.integers(12))
        self.tempo = float(self.rng.integers(st.tempo[0], st.tempo[1] + 1))
        self.meter = self.pick(st.meters)
        self.beat = 60.0 / self.tempo
        self.bar = self.meter * self.beat
        programs = {s: self.pick(getattr(st, s)) for s in ("bass", "guitar", "piano")}
        plays = {"bass": self.pick(st.bass_play), "guitar": self.pick(st.guitar_play),
                 "piano": self.pick(st.piano_play), "drums": st.drums}
        parts = {s: Part(s, programs.get(s, 0), s == "drums", playing=plays[s]) for s in STEMS}
        self._stream("form")
        self.sections, self.chords = self._form()
        self._stream("drums")
        kick_grid = self._drums(parts["drums"])
        for stem, write in (("bass", lambda p: self._bass(p, kick_grid)), ("guitar", self._guitar),
                            ("piano", self._piano)):
            self._stream(stem)
            write(parts[stem])
        for i, p in enumerate(parts.values()):
            self._stream("performance", i)
            p.notes = self._humanise(p)
        return Song(self.seed, self.seconds, st.name, self.tonic, self.mode, self.tempo, self.meter,
                    self.sections, self.chords, parts)

    def _form(self):
        names = list(self.pick(FORMS))
        offset = int(self.rng.integers(0, 2)) if names[0] == "intro" else 0
        names = names[offset:]
        progs = {n: self.pick(PROGRESSIONS[self.mode]) for n in ("intro", "verse", "chorus", "bridge", "outro")}
        if self.chance(0.5):
            progs["intro"] = progs["outro"] = progs["verse"]
        chord_bars = 2 if self.tempo >= 140 and self.chance(0.5) else 1
        sections: list = []
        chords: list = []
        bar = 0
        while bar * self.bar < self.seconds:
            name = names[len(sections) % len(names)]
            bars = 2 * chord_bars if name in ("intro", "outro") and self.chance(0.5) else 4 * chord_bars
            if self.chance(0.3) and name in ("verse", "chorus"):
                bars *= 2
            silent = self._silences(name)
            sections.append(Section(name, bar, bars, bar * self.bar, (bar + bars) * self.bar, silent))
            for i in range(bars):
                if i % chord_bars == 0:
                    degree = progs[name][(i // chord_bars) % 4]
                    root, pcs = diatonic_chord(self.tonic, self.mode, degree, self.style.sevenths)
                    chords.append(Chord(bar + i, (bar + i) * self.bar, (bar + i + chord_bars) * self.bar,
                                        root, pcs, chord_symbol(root, pcs)))
            bar += bars
        self._keep_every_stem(sections)
        return sections, chords

    def _silences(self, name: str) -> tuple[str, ...]:
        """Which stems rest in a section: intros and bridges thin out, choruses play in full."""
        p = {"intro": 0.35, "verse": 0.15, "chorus": 0.0, "bridge": 0.3, "outro": 0.25}[name]
        silent = [s for s in STEMS if self.chance(p)]
        return tuple(silent[:2])

    def _keep_every_stem(self, sections: list[Section]) -> None:
        for stem in STEMS:
            if all(stem in s.silent for s in sections):
                sec = sections[int(self.rng.integers(len(sections)))]
                sec.silent = tuple(s for s in sec.silent if s != stem)

    def _active(self, stem: str, time: float) -> bool:
        return not any(s.start <= time < s.end and stem in s.silent for s in self.sections)

    def _section_at(self, time: float) -> Section:
        return next((s for s in self.sections if s.start <= time < s.end), self.sections[-1])

    def _swing(self, beats: float) -> float:
        """Beat position -> seconds, with the off-beat eighth moved to the style's swing point."""
        whole, frac = divmod(beats, 1.0)
        if abs(frac - 0.5) < 1e-9:
            frac = self.style.swing
        return (whole + frac) * self.beat

    def _beats(self, chord: Chord) -> int:
        """Beats a chord lasts: a whole number of bars, rounded so float error never adds a bar."""
        return round((chord.end - chord.start) / self.beat)

    def _add(self, part: Part, pitch: int, start: float, end: float, velocity: float) -> None:
        if start < self.seconds and self._active(part.stem, start) and end > start:
            part.notes.append(Note(int(pitch), start, min(end, self.seconds), int(np.clip(velocity, 1, 127))))

    # ----- drums ---------------------------------------------------------------------------------
    def _drums(self, part: Part) -> set[float]:
        """Write the kit; return the kick positions (bar-relative beats), which the bass may follow."""
        steps = self.meter * 4
        grid = self._drum_pattern(part.playing, steps)
        kicks = {i / 4 for i, _ in grid.get(KICK, [])}
        for sec in self.sections:
            for b in range(sec.bars):
                t0 = (sec.first_bar + b) * self.bar
                fill = b == sec.bars - 1 and self.chance(0.6)
                for drum, hits in grid.items():
                    for step, vel in hits:
                        if fill and step >= steps // 2 and drum != KICK:
                            continue
                        self._add(part, drum, t0 + self._swing(step / 4), t0 + self._swing(step / 4) + 0.1, vel)
                if b == 0 and (sec.first_bar > 0 or self.chance(0.5)):
                    self._add(part, CRASH, t0, t0 + 1.0, 105)
                if fill:
                    self._fill(part, t0, steps)
        return kicks

    def _drum_pattern(self, kind: str, steps: int) -> dict[int, list[tuple[int, int]]]:
        """One bar as {drum: [(sixteenth step, velocity)]}."""
        beats = range(0, steps, 4)
        eighths = range(0, steps, 2)
        backbeat = [b for b in beats if (b // 4) % 2 == 1] if self.meter == 4 else [4, 8]
        kick_on = [0] if self.meter == 3 else [0, 8]
        if kind == "rock":
            extra = self.pick(([10], [6], [], [10, 14]))
            hat = HAT if self.chance(0.7) else RIDE
            return {KICK: [(s, 105) for s in kick_on + extra], SNARE: [(s, 110) for s in backbeat],
                    hat: [(s, 90 if s % 4 == 0 else 70) for s in eighths]}
        if kind == "pop":
            sixteen = self.chance(0.4)
            return {KICK: [(s, 100) for s in kick_on + self.pick(([6], [10], [3, 10]))],
                    SNARE: [(s, 100) for s in backbeat],
                    HAT: [(s, 80 if s % 4 == 0 else 60) for s in (range(steps) if sixteen else eighths)]}
        if kind == "funk":
            kick = [0] + self.pick(([3, 10], [6, 11], [10, 13], [7, 10]))
            ghosts = [s for s in range(steps) if s % 4 in (1, 3) and self.chance(0.3)]
            return {KICK: [(s, 105) for s in kick], SNARE: [(s, 110) for s in backbeat] + [(s, 35) for s in ghosts],
                    HAT: [(s, 85 if s % 2 == 0 else 55) for s in range(steps)],
                    OPEN_HAT: [(steps - 2, 80)] if self.chance(0.5) else []}
        if kind == "ballad":
            return {KICK: [(0, 85)] + ([(10, 70)] if self.meter == 4 else []),
                    RIM: [(s, 75) for s in backbeat],
                    self.pick((HAT, RIDE)): [(s, 60) for s in (beats if self.chance(0.5) else eighths)]}
        if kind == "swing":
            ride = [(s, 85) for s in beats] + [(s + 2, 60) for s in backbeat]
            comp = [(s, 45) for s in eighths if self.chance(0.15)]
            return {RIDE: ride, PEDAL_HAT: [(s, 70) for s in backbeat], KICK: [(s, 40) for s in beats], SNARE: comp}
        if kind == "train":
            return {KICK: [(s, 100) for s in kick_on], SNARE: [(s, 105 if s in backbeat else 50) for s in range(steps)
                                                                if s % 2 == 0],
                    HAT: [(s, 70) for s in beats]}
        if kind == "metal":
            return {KICK: [(s, 110) for s in range(0, steps, 1 if self.chance(0.5) else 2)],
                    SNARE: [(s, 120) for s in backbeat], CRASH: [(0, 110)], RIDE: [(s, 90) for s in beats]}
        raise ValueError(f"unknown drum style {kind!r}")

    def _fill(self, part: Part, t0: float, steps: int) -> None:
        toms = list(TOMS[: int(self.rng.integers(2, 5))])
        n = steps - steps // 2
        for i, step in enumerate(range(steps // 2, steps)):
            drum = SNARE if self.chance(0.35) else toms[min(i * len(toms) // n, len(toms) - 1)]
            self._add(part, drum, t0 + self._swing(step / 4), t0 + self._swing(step / 4) + 0.1, 85 + 2 * i)

    # ----- bass ----------------------------------------------------------------------------------
    @staticmethod
    def _in_range(pc: int, low: int, high: int) -> int:
        pitch = low + (pc - low) % 12
        return pitch if pitch <= high else pitch - 12

    def _bass(self, part: Part, kicks: set[float]) -> None:
        low = 28 + int(self.rng.integers(0, 5))
        for i, ch in enumerate(self.chords):
            nxt = self.chords[i + 1] if i + 1 < len(self.chords) else ch
            root = self._in_range(ch.root, low, low + 11)
            fifth = root + 7
            beats = self._beats(ch)
            at = lambda b, ch=ch: ch.start + self._swing(b)
            kind = part.playing
            if kind == "whole":
                self._add(part, root, at(0), ch.end - 0.05, 95)
            elif kind == "eighths":
                for k in range(beats * 2):
                    self._add(part, root + (12 if k % 8 == 7 and self.chance(0.3) else 0), at(k / 2),
                              at(k / 2) + 0.45 * self.beat, 100 if k % 2 == 0 else 85)
            elif kind == "kick":
                hits = sorted(kicks) or [0.0]
                for bar_off in np.arange(0, beats, self.meter):
                    for j, h in enumerate(hits):
                        end = hits[j + 1] if j + 1 < len(hits) else self.meter
                        self._add(part, root, at(bar_off + h), at(bar_off + end) - 0.03, 100)
            elif kind == "root_fifth":
                for b in range(beats):
                    pitch = root if b % 2 == 0 else (fifth if fifth <= 50 else root - 5)
                    self._add(part, pitch, at(b), at(b) + 0.8 * self.beat, 100 if b % 2 == 0 else 88)
            elif kind == "funk":
                for b16 in range(beats * 4):
                    if b16 % 4 == 0 or self.chance(0.35):
                        pitch = root + (12 if self.chance(0.25) else 0)
                        self._add(part, pitch, at(b16 / 4), at(b16 / 4) + 0.2 * self.beat, 110 if b16 % 4 == 0 else 90)
            elif kind == "walking":
                target = self._in_range(nxt.root, low, low + 11)
                tones = [root, self._in_range(ch.pitches[1], root, root + 11),
                         self._in_range(ch.pitches[2], root, root + 11)]
                for b in range(beats):
                    last = b == beats - 1
                    pitch = target + self.pick((-1, 1)) if last else tones[b % 3]
                    self._add(part, pitch, at(b), at(b) + 0.9 * self.beat, 95 if b % 2 == 0 else 85)
            else:
                raise ValueError(f"unknown bass playing {kind!r}")

    # ----- guitar and piano ----------------------------------------------------------------------
    def _voicing(self, pcs: tuple[int, ...], low: int, high: int, size: int, previous: list[int] | None) -> list[int]:
        """Chord tones in [low, high], ``size`` notes, the inversion closest to the previous voicing."""
        options = []
        for inv in range(len(pcs)):
            order = pcs[inv:] + pcs[:inv]
            notes, p = [], low - 1
            for k in range(size):
                pc = order[k % len(order)]
                p = p + 1 + (pc - p - 1) % 12
                notes.append(p)
            for shift in (0, 12):
                v = [n + shift for n in notes]
                if v[-1] <= high:
                    options.append(v)
        if not options:
            options = [[self._in_range(pc, low, high) for pc in pcs]]
        if previous is None:
            return options[int(self.rng.integers(len(options)))]
        return min(options, key=lambda v: sum(abs(a - b) for a, b in zip(v, previous)))

    def _guitar(self, part: Part) -> None:
        prev = None
        pattern = self.pick(((0, 2, 3, 5, 6), (0, 3, 4, 6), (0, 1, 2, 3, 4, 5, 6, 7), (0, 2, 4, 6)))
        for ch in self.chords:
            beats = self._beats(ch)
            at = lambda b, ch=ch: ch.start + self._swing(b)
            kind = part.playing
            if kind == "power":
                root = self._in_range(ch.root, 40, 52)
                shape = (root, root + (ch.pitches[2] - ch.root) % 12, root + 12)  # the chord's own fifth
                palm = self.chance(0.6)
                for k in range(beats * 2):
                    dur = (0.3 if palm else 0.9) * self.beat / 2
                    for p in shape:
                        self._add(part, p, at(k / 2), at(k / 2) + dur, 105 if k % 2 == 0 else 90)
                continue
            size = 3 if kind in ("chank", "comp_jazz") else 5
            low = 55 if kind in ("chank", "comp_jazz") else 40
            prev = voicing = self._voicing(ch.pitches, low, 76, size, prev)
            if kind == "strum":
                for bar_off in np.arange(0, beats, self.meter):
                    for e in pattern:
                        if e >= self.meter * 2:
                            continue
                        down = e % 2 == 0
                        strings = voicing if down else voicing[::-1][:3]
                        t = at(bar_off + e / 2)
                        for j, p in enumerate(strings):
                            self._add(part, p, t + j * 0.012, t + 0.95 * self.beat, 95 if down else 70)
            elif kind == "arpeggio":
                order = voicing + voicing[-2:0:-1]
                for k in range(beats * 2):
                    self._add(part, order[k % len(order)], at(k / 2), at(k / 2) + 1.5 * self.beat, 80 + 10 * (k % 2 == 0))
            elif kind == "chank":
                for b16 in range(beats * 4):
                    if b16 % 4 in (1, 2) and self.chance(0.6) or b16 % 8 == 4:
                        for p in voicing:
                            self._add(part, p, at(b16 / 4), at(b16 / 4) + 0.12 * self.beat, 95)
            elif kind == "comp_jazz":
                for b in range(beats):
                    if self.chance(0.5):
                        start = b + (0.5 if self.chance(0.4) else 0.0)
                        for p in voicing:
                            self._add(part, p, at(start), at(start) + 0.6 * self.beat, 75)
            else:
                raise ValueError(f"unknown guitar playing {kind!r}")

    def _piano(self, part: Part) -> None:
        prev = None
        melody_sections = {s.name for s in self.sections if s.name in ("chorus", "bridge") and self.chance(0.5)}
        scale = [(self.tonic + d) % 12 for d in SCALES[self.mode]]
        rhythm = self.pick(((0, 1.5, 3), (0, 2), (0, 1, 2, 3), (0.5, 1.5, 2.5, 3.5), (0, 2.5)))
        melody_pitch = 72
        for ch in self.chords:
            beats = self._beats(ch)
            at = lambda b, ch=ch: ch.start + self._swing(b)
            prev = voicing = self._voicing(ch.pitches, 53, 79, 4 if len(ch.pitches) > 3 else 3, prev)
            left = self._in_range(ch.root, 36, 47)
            melody = self._section_at(ch.start).name in melody_sections
            kind = part.playing
            for bar_off in np.arange(0, beats, self.meter):
                self._add(part, left, at(bar_off), at(bar_off) + min(beats, self.meter) * self.beat * 0.95, 80)
                if kind == "block":
                    for b in range(self.meter):
                        for p in voicing:
                            self._add(part, p, at(bar_off + b), at(bar_off + b) + 0.9 * self.beat, 85 if b == 0 else 70)
                elif kind == "comp":
                    for r in rhythm:
                        if r < self.meter:
                            for p in voicing:
                                self._add(part, p, at(bar_off + r), at(bar_off + r) + 0.7 * self.beat, 80)
                elif kind == "arpeggio":
                    order = voicing + [voicing[0] + 12]
                    for k in range(self.meter * 2):
                        self._add(part, order[k % len(order)], at(bar_off + k / 2), at(bar_off + self.meter), 72)
                else:
                    raise ValueError(f"unknown piano playing {kind!r}")
                if melody:
                    melody_pitch = self._melody(part, ch, bar_off, scale, melody_pitch, at)

    def _melody(self, part: Part, ch: Chord, bar_off: float, scale: list[int], pitch: int, at) -> int:
        """A right-hand line: chord tones on strong beats, scale steps between, kept in 67..88."""
        b = 0.0
        while b < self.meter:
            dur = self.pick((0.5, 1.0, 1.0, 1.5, 2.0))
            strong = b % 1 == 0
            pool = ch.pitches if strong else scale
            candidates = [p for p in range(67, 89) if p % 12 in pool and abs(p - pitch) <= 5]
            if candidates:
                pitch = self.pick(candidates)
                self._add(part, pitch, at(bar_off + b), at(bar_off + min(b + dur, self.meter)) - 0.02, 95)
            b += dur
        return pitch

    # ----- performance ---------------------------------------------------------------------------
    def _humanise(self, part: Part) -> list[Note]:
        """Timing jitter (a few ms, less for drums) and velocity spread; never before 0 or after the end.

        A note is cut where the same key is struck again, so MIDI and audio agree on every note.
        """
        spread = 0.004 if part.is_drum else 0.008
        out: list[Note] = []
        last: dict[int, Note] = {}
        for n in sorted(part.notes, key=lambda n: (n.start, n.pitch)):
            shift = float(self.rng.normal(0, spread))
            start = min(max(0.0, n.start + shift), self.seconds)
            end = min(max(start + 0.02, n.end + shift), self.seconds)
            vel = int(np.clip(n.velocity + self.rng.normal(0, 6), 1, 127))
            before = last.get(n.pitch)
            if before is not None and before.end > start:
                if start - before.start < 0.01:
                    continue  # the same key twice at once: one strike
                before.end = start
            if end > start:
                last[n.pitch] = Note(n.pitch, start, end, vel)
                out.append(last[n.pitch])
        return out


def compose(seed: int, seconds: float) -> Song:
    """One song, fully determined by ``seed``, covering ``seconds`` of music."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return _Composer(int(seed), float(seconds)).compose()
