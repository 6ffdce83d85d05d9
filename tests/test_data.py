"""The synthetic mini-Slakh (composer, rendering, splits, CLI) and the loaders on all three layouts."""

from __future__ import annotations

import json
import math

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch

from mtldm_cli.data.compose import SCALES, STEMS, compose
from mtldm_cli.data.datasets import StemDataset, parse_stem_map, scan
from mtldm_cli.data.render import SPLITS, render_song, song_seeds, soundfont_path, synthesize
from mtldm_cli.errors import DataError, InputError

from .conftest import assert_one_line_error

SONGS = range(40)


def _chord_at(song, t):
    return next(c for c in reversed(song.chords) if c.start <= t + 1e-9)


# ----- composer ----------------------------------------------------------------------------------

def test_composer_is_deterministic_per_seed_and_varies_across_seeds():
    a, b = compose(5, 12.0), compose(5, 12.0)
    assert a.meta() == b.meta()
    assert all(a.parts[s].notes == b.parts[s].notes for s in STEMS)
    metas = [compose(s, 12.0).meta() for s in SONGS]
    assert len({m["caption"] for m in metas}) > 30
    assert len({m["style"] for m in metas}) >= 6 and len({m["key"] for m in metas}) >= 12
    assert {3, 4} == {int(m["time_signature"][0]) for m in metas}


def test_a_seed_keeps_its_identity_at_any_length():
    for seed in range(10):
        short, long = compose(seed, 8.0).meta(), compose(seed, 40.0).meta()
        for key in ("caption", "style", "key", "tempo", "time_signature"):
            assert short[key] == long[key]
        assert [c["symbol"] for c in short["chords"]] == [c["symbol"] for c in long["chords"]][:len(short["chords"])]


def test_every_part_plays_the_shared_harmony():
    """Bass, guitar and piano strike chord tones of the chord sounding at every chord change."""
    for seed in SONGS:
        song = compose(seed, 12.0)
        assert all(c.root == c.pitches[0] for c in song.chords)
        scale = set(SCALES[song.mode])
        for c in song.chords:  # diatonic, allowing the harmonic-minor leading tone
            assert {(p - song.tonic) % 12 for p in c.pitches} <= scale | {11}
        for stem in ("bass", "guitar", "piano"):
            part = song.parts[stem]
            for n in part.notes:
                chord = _chord_at(song, n.start + 0.05)
                if abs(n.start - chord.start) < 0.03:
                    assert n.pitch % 12 in chord.pitches, (seed, stem, n, chord.symbol)
                if stem == "bass" and abs(n.start - chord.start) < 0.03:
                    assert n.pitch % 12 == chord.root, (seed, n, chord.symbol)
            in_chord = sum(n.pitch % 12 in _chord_at(song, n.start + 0.01).pitches for n in part.notes)
            assert in_chord >= 0.75 * len(part.notes), (seed, stem, part.playing)


def test_tempo_meter_and_midi_agree_with_the_meta():
    for seed in SONGS:
        song = compose(seed, 12.0)
        beat = 60 / song.tempo
        assert 66 <= song.tempo <= 160
        grid = [0, 0.25, 0.5, 0.75, _swing(song)]
        for n in song.parts["drums"].notes:  # every hit on the sixteenth grid (swing allowed), humanised a little
            pos = (n.start / beat) % 1
            assert min(min(abs(pos - g), 1 - abs(pos - g)) for g in grid) * beat < 0.025, (seed, n)
        bars = np.array([c.start for c in song.chords]) / (song.beats_per_bar * beat)
        assert np.allclose(bars, np.round(bars)) and bars[0] == 0  # chords change on bar lines
        pm = song.to_midi()
        assert math.isclose(pm.get_tempo_changes()[1][0], song.tempo, rel_tol=1e-6)
        assert pm.time_signature_changes[0].numerator == song.beats_per_bar
        for inst in pm.instruments:
            part = song.parts[inst.name]
            assert inst.is_drum == (inst.name == "drums") and len(inst.notes) == len(part.notes)
            assert all(0 <= n.start < n.end <= song.seconds + 1e-6 for n in inst.notes)


def _swing(song):
    from mtldm_cli.data.compose import STYLES

    return next(s.swing for s in STYLES if s.name == song.style)


def test_songs_leave_stems_out_for_sections_but_play_every_stem():
    silent_somewhere = 0
    for seed in SONGS:
        song = compose(seed, 30.0)
        for stem in STEMS:
            assert song.parts[stem].notes, (seed, stem)
        for sec in song.sections:
            for stem in sec.silent:
                silent_somewhere += 1
                assert not [n for n in song.parts[stem].notes if sec.start + 0.05 < n.start < sec.end - 0.05]
    assert silent_somewhere > 5


# ----- rendering ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered():
    """A song with a long silent section, rendered at 16 kHz."""
    for seed in range(200):
        song = compose(seed, 12.0)
        gaps = [(s, st) for s in song.sections for st in s.silent if min(s.end, 12.0) - s.start > 4]
        if gaps:
            audio, gain = render_song(song, 16000, soundfont_path())
            return song, audio, gain, gaps
    raise AssertionError("no song with a silent section")


def test_render_mix_is_the_exact_sum_without_clipping(rendered):
    song, audio, gain, _ = rendered
    assert set(audio) == {*STEMS, "mix"} and gain > 0
    total = sum(audio[s].astype(np.int32) for s in STEMS)
    assert np.array_equal(total, audio["mix"].astype(np.int32))
    assert max(np.abs(a.astype(np.int32)).max() for a in audio.values()) <= 0.9 * 32767 + 4
    assert all(a.dtype == np.int16 and a.shape == (12 * 16000,) for a in audio.values())


def test_each_stem_sounds_where_its_midi_has_notes_and_rests_where_not(rendered):
    song, audio, _, gaps = rendered
    for stem in STEMS:
        x = audio[stem].astype(np.float32) / 32768
        for n in song.parts[stem].notes:
            a = int(n.start * 16000)
            assert np.sqrt(np.mean(x[a:a + 1600] ** 2)) > 1e-3, (stem, n)
    for sec, stem in gaps:
        x = audio[stem].astype(np.float32) / 32768
        quiet = x[int((sec.start + 2.0) * 16000):int(min(sec.end, 12.0) * 16000)]
        assert np.abs(quiet).mean() < 1.5e-5, (stem, sec.name)


def test_render_rates_and_determinism():
    song = compose(3, 4.0)
    a16, _ = render_song(song, 16000, soundfont_path())
    a22, _ = render_song(song, 22050, soundfont_path())
    assert a16["mix"].shape == (64000,) and a22["mix"].shape == (88200,)
    again, _ = render_song(compose(3, 4.0), 16000, soundfont_path())
    assert all(np.array_equal(a16[k], again[k]) for k in a16)


def test_splits_never_share_a_song_and_bounds_are_checked():
    ranges = {s: song_seeds(s, 0, 1000) for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a != b:
                assert not set(ranges[a]) & set(song_seeds(b, 999_000, 1000))
                assert not set(ranges[a]) & set(ranges[b])
    with pytest.raises(InputError, match="past the"):
        song_seeds("train", 999_999, 2)
    with pytest.raises(InputError, match="unknown split"):
        song_seeds("dev", 0, 1)


def test_synthesize_writes_whole_tracks_and_resumes(tmp_path):
    out = tmp_path / "ms"
    report = synthesize(out, tracks=2, seconds=3.0, seed=7, split="validation")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"Track{SPLITS['validation'] + 7:07d}", f"Track{SPLITS['validation'] + 8:07d}"]
    assert len(report.written) == 2 and not report.kept
    with pytest.raises(Exception, match="already exists"):
        synthesize(out, tracks=2, seconds=3.0, seed=7, split="validation")
    again = synthesize(out, tracks=3, seconds=3.0, seed=7, split="validation", resume=True)
    assert len(again.kept) == 2 and len(again.written) == 1
    with pytest.raises(Exception, match="was made with 3.0 s at 16000 Hz"):
        synthesize(out, tracks=2, seconds=4.0, seed=7, split="validation", resume=True)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_synth_done_when(cli, tmp_path):
    """The issue's check: 3 tracks of 12 s; stems sound at their notes; mix.wav == stem sum to 1e-4."""
    out = tmp_path / "ms"
    r = cli("data", "synth", "--out", out, "--tracks", 3, "--seconds", 12, "--seed", 0, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == 3 and summary["tracks_per_s"] > 0
    tracks = sorted(out.iterdir())
    assert len(tracks) == 3
    for t in tracks:
        assert sorted(p.name for p in t.iterdir()) == sorted(
            [f"{s}.wav" for s in (*STEMS, "mix")] + ["meta.json", "song.mid"])
        wav = {s: sf.read(t / f"{s}.wav", dtype="float32")[0] for s in (*STEMS, "mix")}
        assert np.abs(sum(wav[s] for s in STEMS) - wav["mix"]).max() < 1e-4
        meta = json.loads((t / "meta.json").read_text())
        assert meta["sample_rate"] == 16000 and meta["samples"] == 12 * 16000 and meta["caption"]
        midi = pretty_midi.PrettyMIDI(str(t / "song.mid"))
        for inst in midi.instruments:
            x = wav[inst.name]
            for n in inst.notes:
                a = int(n.start * 16000)
                assert np.sqrt(np.mean(x[a:a + 1600] ** 2)) > 1e-3, (t.name, inst.name, n)
    r = cli("data", "synth", "--out", out, "--tracks", 3, "--seconds", 12)
    assert_one_line_error(r, 4, "already exists")


def test_cli_synth_bad_input(cli, tmp_path):
    assert_one_line_error(cli("data", "synth", "--out", tmp_path / "x", "--tracks", 1, "--seconds", 2,
                              "--soundfont", tmp_path / "none.sf2"), 2, "soundfont not found")
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"not a soundfont")
    assert_one_line_error(cli("data", "synth", "--out", tmp_path / "x", "--tracks", 1, "--seconds", 2,
                              "--soundfont", bad), 2, "not a usable soundfont")
    assert_one_line_error(cli("data", "synth", "--out", tmp_path / "x", "--seed", 999_999, "--tracks", 5), 2,
                          "past the")


# ----- loaders -----------------------------------------------------------------------------------

def _write(path, wav, sr, fmt="WAV"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(wav, dtype=np.float32), sr, format=fmt, subtype="PCM_16")


def _tone(freq, seconds, sr, amp=0.25):
    t = np.arange(int(round(seconds * sr))) / sr
    return amp * np.sin(2 * np.pi * freq * t)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    out = tmp_path_factory.mktemp("ours")
    synthesize(out, tracks=2, seconds=9.0, seed=0)
    return out


def test_dataset_on_our_layout_segments_mix_and_caption(ours):
    ds = StemDataset(ours, segment_seconds=4.0, random_shift=False)
    assert len(ds.tracks) == 2 and len(ds) == 4 and not ds.skipped
    item = ds[1]
    assert item["stems"].shape == (4, 64000) and item["start"] == 4.0
    assert torch.equal(item["mix"], item["stems"].sum(0))
    assert item["caption"] == json.loads((ours / item["track"] / "meta.json").read_text())["caption"]
    ref = sf.read(ours / item["track"] / "bass.wav", dtype="float32", start=64000, stop=128000)[0]
    assert torch.equal(item["stems"][0], torch.from_numpy(ref))  # not normalised, not touched
    mix = sf.read(ours / item["track"] / "mix.wav", dtype="float32", start=64000, stop=128000)[0]
    assert np.abs(item["mix"].numpy() - mix).max() < 1e-6


def test_dataset_batches_through_a_dataloader(ours):
    from torch.utils.data import DataLoader

    batch = next(iter(DataLoader(StemDataset(ours, segment_seconds=4.0), batch_size=3, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))))
    assert batch["stems"].shape == (3, 4, 64000) and batch["mix"].shape == (3, 64000)
    assert len(batch["caption"]) == 3 and all(batch["caption"])


def test_random_shift_tiles_tracks_and_follows_seed_and_epoch(ours):
    ds = StemDataset(ours, segment_seconds=4.0, seed=3)
    starts = [ds.locate(i) for i in range(len(ds))]
    shift = starts[0][1]
    assert 0 <= shift <= 1.0 and starts[1][1] == pytest.approx(shift + 4.0)
    assert starts == [StemDataset(ours, segment_seconds=4.0, seed=3).locate(i) for i in range(len(ds))]
    seen = {tuple(ds.locate(i) for i in range(len(ds)))}
    for epoch in range(1, 5):
        ds.set_epoch(epoch)
        seen.add(tuple(ds.locate(i) for i in range(len(ds))))
    assert len(seen) > 1
    item = ds[0]
    assert item["stems"].shape == (4, 64000) and item["start"] == ds.locate(0)[1]


@pytest.fixture
def msdm(tmp_path):
    """MSDM's Slakh layout at 22,050 Hz, with one good track and three that must be skipped."""
    root = tmp_path / "slakh2100" / "test"
    sr = 22050
    for s, f in zip(STEMS, (55, 110, 330, 440)):
        _write(root / "Track00001" / f"{s}.wav", _tone(f, 11.0, sr), sr)
    for s in ("bass", "drums", "guitar"):  # no piano: silence, as MSDM
        _write(root / "Track00002" / f"{s}.wav", _tone(220, 10.5, sr), sr)
    _write(root / "Track00003" / "bass.wav", _tone(55, 11.0, sr), sr)
    _write(root / "Track00003" / "drums.wav", _tone(55, 10.9, sr), sr)
    _write(root / "Track00004" / "bass.wav", _tone(55, 3.0, sr), sr)
    (root / "Track00005").mkdir()
    (root / "Track00005" / "bass.wav").write_bytes(b"RIFF\x00\x00garbage")
    return root


def test_msdm_layout_resamples_and_skips_bad_tracks_with_reasons(msdm):
    ds = StemDataset(msdm, random_shift=False)
    assert [t.name for t in ds.tracks] == ["Track00001", "Track00002"]
    why = dict((p.split("/")[-1], w) for p, w in ds.skipped)
    assert "unequal length" in why["Track00003"]
    assert "shorter than a segment" in why["Track00004"]
    assert "unreadable" in why["Track00005"]
    assert ds.tracks[1].missing == ["piano"]
    item = ds[1]
    assert item["stems"].shape == (4, 163840)
    assert torch.count_nonzero(item["stems"][3]) == 0
    bass = ds[0]["stems"][0]
    assert bass[1000:-1000].abs().max() == pytest.approx(0.25, abs=0.01)  # 22.05 -> 16 kHz keeps the level
    spectrum = torch.fft.rfft(bass)
    assert int(spectrum.abs().argmax()) * 16000 / 163840 == pytest.approx(55, abs=0.2)


def test_root_with_splits_gets_a_hint(msdm):
    with pytest.raises(DataError, match="split folders"):
        scan(msdm.parent)


@pytest.fixture
def slakh(tmp_path):
    """Slakh2100 as released: stems/SYY.flac at 44.1 kHz and metadata.yaml with inst_class."""
    root = tmp_path / "slakh2100_flac" / "train"
    sr = 44100
    entries = {
        "S00": ("Bass", 55, True), "S01": ("Drums", 100, True), "S02": ("Guitar", 330, True),
        "S03": ("Guitar", 660, True), "S04": ("Strings", 880, True), "S05": ("Piano", 440, False),
    }
    lines = ["UUID: abc", "audio_dir: stems", "midi_dir: MIDI", "stems:"]
    for sid, (cls, freq, rendered) in entries.items():
        lines += [f"  {sid}:", f"    inst_class: {cls}", f"    audio_rendered: {str(rendered).lower()}",
                  f"    is_drum: {str(cls == 'Drums').lower()}", "    program_num: 0"]
        if rendered:
            _write(root / "Track00001" / "stems" / f"{sid}.flac", _tone(freq, 10.5, sr, 0.2), sr, "FLAC")
    (root / "Track00001" / "metadata.yaml").write_text("\n".join(lines) + "\n")
    _write(root / "Track00001" / "mix.flac", _tone(55, 10.5, sr), sr, "FLAC")
    (root / "Track00002" / "stems").mkdir(parents=True)
    (root / "Track00002" / "metadata.yaml").write_text("stems: [unclosed\n")
    (root / "Track00003" / "stems").mkdir(parents=True)
    (root / "Track00003" / "metadata.yaml").write_text("stems:\n  S00:\n    inst_class: Bass\n    audio_rendered: true\n")
    return root


def test_slakh_original_layout_maps_inst_class_to_stems(slakh):
    ds = StemDataset(slakh, random_shift=False)
    assert [t.name for t in ds.tracks] == ["Track00001"]
    track = ds.tracks[0]
    assert [p.name for p in track.files["guitar"]] == ["S02.flac", "S03.flac"]
    assert track.files["piano"] == [] and track.missing == ["piano"]  # not rendered
    assert all("S04" not in p.name for ps in track.files.values() for p in ps)  # strings left out
    why = dict((p.split("/")[-1], w) for p, w in ds.skipped)
    assert "metadata.yaml is unreadable" in why["Track00002"]
    assert "S00.flac is missing" in why["Track00003"]
    guitar = ds[0]["stems"][2]
    spectrum = torch.fft.rfft(guitar).abs()
    peaks = sorted(int(i) * 16000 / guitar.numel() for i in spectrum.topk(2).indices)
    assert peaks == pytest.approx([330, 660], abs=0.2)  # two guitar stems summed, resampled from 44.1 kHz


@pytest.mark.parametrize("field", ["audio_dir", "stem id"])
def test_slakh_metadata_cannot_point_outside_its_track(slakh, field):
    """metadata.yaml's audio_dir and stem ids become paths: ``../Track00001/stems`` (another track's
    audio, or anything on the disk) or a stem id ``../../S00`` make the track skipped, with why."""
    meta = (slakh / "Track00001" / "metadata.yaml").read_text()
    (slakh / "Track00004").mkdir()
    if field == "audio_dir":
        meta = meta.replace("audio_dir: stems", "audio_dir: ../Track00001/stems")
    else:
        meta = meta.replace("  S00:", "  ../../Track00001/stems/S00:")
        (slakh / "Track00004" / "stems").mkdir()
    (slakh / "Track00004" / "metadata.yaml").write_text(meta)
    ds = StemDataset(slakh, random_shift=False)
    assert [t.name for t in ds.tracks] == ["Track00001"]
    why = dict((p.split("/")[-1], w) for p, w in ds.skipped)
    assert "not a plain file name" in why["Track00004"]


def test_user_stem_folders_with_a_stem_map(tmp_path):
    root = tmp_path / "mine"
    for name, f in (("Bass DI", 55), ("kit", 100), ("gtr_left", 330), ("gtr_right", 335), ("keys", 440),
                    ("vocals", 880)):
        _write(root / "song1" / f"{name}.wav", _tone(f, 10.5, 16000, 0.1), 16000)
    stem_map = parse_stem_map(["bass=bass*", "drums=kit", "guitar=gtr_*", "piano=keys,piano"])
    ds = StemDataset(root, stem_map=stem_map, random_shift=False)
    files = {s: [p.name for p in ps] for s, ps in ds.tracks[0].files.items()}
    assert files == {"bass": ["Bass DI.wav"], "drums": ["kit.wav"], "guitar": ["gtr_left.wav", "gtr_right.wav"],
                     "piano": ["keys.wav"]}
    assert ds[0]["stems"][2].abs().max() > 0.15  # both guitar files, summed
    with pytest.raises(DataError, match="no usable track folders"):
        StemDataset(root)  # no file is named for a stem
    with pytest.raises(DataError, match="matches both"):
        StemDataset(root, stem_map=parse_stem_map(["bass=bass*", "drums=*"]))
    with pytest.raises(DataError, match="unknown stems: vocals"):
        scan(root, stem_map={"vocals": ["vocals"]})
    with pytest.raises(DataError, match="expected STEM=NAME"):
        parse_stem_map(["guitar"])


def test_a_file_damaged_after_the_scan_is_skipped_and_counted(ours, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(ours, root)
    ds = StemDataset(root, segment_seconds=4.0, random_shift=False)
    (root / ds.tracks[0].name / "drums.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    item = ds[0]
    assert item["track"] == ds.tracks[1].name
    assert len(ds.skipped) == 1 and "unreadable" in ds.skipped[0][1]
    assert ds[1]["track"] == ds.tracks[1].name and len(ds.skipped) == 1  # not retried
    (root / ds.tracks[1].name / "bass.wav").unlink()
    with pytest.raises(DataError, match="every track"):
        ds[2]


def test_cli_check_reports_tracks_and_skips(cli, msdm, tmp_path):
    r = cli("data", "check", msdm, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["tracks"] == 2 and summary["segments"] == 2 and len(summary["skipped"]) == 3
    assert summary["tracks_missing_stem"]["piano"] == 1
    r = cli("data", "check", msdm)
    assert r.exit_code == 0 and "2 tracks" in r.stderr and r.stderr.count("skipped") == 3
    assert_one_line_error(cli("data", "check", tmp_path / "none"), 2, "not a folder")
    assert_one_line_error(cli("data", "check", msdm.parent), 2, "no usable track folders")
    assert_one_line_error(cli("data", "check", msdm, "--stem-map", "guitar"), 2, "expected STEM=NAME")
