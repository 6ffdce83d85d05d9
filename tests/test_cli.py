import json
import re

import numpy as np
import pytest
import soundfile as sf

from .conftest import STEMS, archive_model, assert_one_line_error, register_entry

FAST = ("--steps", "2", "--seed", "0", "--device", "cpu", "-q")


def test_help_lists_every_command(cli):
    r = cli("--help")
    assert r.exit_code == 0
    commands = r.stdout[r.stdout.index("Commands"):]
    listed = {m[1] for m in re.finditer(r"^\W*([a-z]+)\s{2,}\S", commands, re.M)}
    assert listed == {"generate", "condition", "arrange", "separate", "evaluate", "plot", "train", "convert", "models", "data"}
    for c in sorted(listed):
        sub = cli(c, "--help")
        assert sub.exit_code == 0 and "Usage: mtldm " + c in " ".join(sub.stdout.split()), c
    assert cli("--version").stdout.startswith("mtldm ")


def test_generate_writes_stems_mix_and_run_json(cli, tmp_path):
    out = tmp_path / "g"
    r = cli("generate", "--model", "tiny-random", "--out", out, "--duration", "0.5", *FAST)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{s}.wav" for s in STEMS), "mix.wav", "run.json"])
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == "generate" and info["options"]["seed"] == 0 and info["options"]["steps"] == 2
    bass, sr = sf.read(out / "bass.wav")
    assert sr == 16000 and bass.shape == (8000,)


def test_generate_json_prompt_and_stem_selection(cli, tmp_path):
    r = cli("generate", "--prompt", "metal", "--stems", "bass,piano", "--out", tmp_path / "g", "--duration", "0.5",
            "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"] and summary["info"]["prompt"] == "metal"
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["bass.wav", "mix.wav", "piano.wav", "run.json"]


def test_arrange_keeps_given_sample_exact(cli, stem_dir, tmp_path):
    out = tmp_path / "a"
    r = cli("arrange", "--given", stem_dir / "bass.wav", stem_dir / "drums.wav", "--want", "piano", "--out", out, *FAST)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bass.wav", "drums.wav", "mix.wav", "piano.wav", "run.json"]
    for s in ("bass", "drums"):
        assert np.array_equal(sf.read(out / f"{s}.wav", dtype="int16")[0], sf.read(stem_dir / f"{s}.wav", dtype="int16")[0])
    info = json.loads((out / "run.json").read_text())
    assert info["given"] == ["bass", "drums"] and info["want"] == ["piano"]


def test_arrange_explicit_names_and_repeated_flags(cli, stem_dir, tmp_path):
    take = tmp_path / "take3.wav"
    take.write_bytes((stem_dir / "guitar.wav").read_bytes())
    r = cli("arrange", "-g", f"guitar={take}", "-g", stem_dir / "piano.wav", "--want", "bass", "--want", "drums",
            "--out", tmp_path / "a", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["info"]["want"] == ["bass", "drums"]


def test_condition_and_separate_and_evaluate(cli, stem_dir, tmp_path):
    r = cli("condition", "--ref", stem_dir / "mix.wav", "--out", tmp_path / "c", "--duration", "0.5", *FAST)
    assert r.exit_code == 0, r.stderr
    for method in ("dirac", "gaussian"):
        r = cli("separate", stem_dir / "mix.wav", "--method", method, "--out", tmp_path / method, *FAST)
        assert r.exit_code == 0, r.stderr
        assert json.loads((tmp_path / method / "run.json").read_text())["options"]["method"] == method
    r = cli("evaluate", "--est", tmp_path / "dirac", "--ref", stem_dir, "--json")
    assert r.exit_code == 0, r.stderr
    scores = json.loads(r.stdout)["stems"]
    assert set(scores) == set(STEMS) and all(v["windows"] == 0 for v in scores.values())  # 2 s < one 4 s window
    r = cli("evaluate", "--est", stem_dir, "--ref", stem_dir, "--window", "1", "--hop", "0.5")
    assert r.exit_code == 0 and "SI-SDRi" in r.stdout


def test_models_lists_registry(cli):
    r = cli("models", "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["schema"] == 1
    rows = {m["name"]: m for m in doc["models"]}
    assert rows["tiny-random"]["stems"] == list(STEMS)
    assert "tiny-random" in cli("models").stdout


# -- bad input: one line on stderr, a meaningful exit code, nothing written --------------------
def _bad_wavs(tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan] * 100, np.float32), 16000, subtype="FLOAT")
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "adir.wav").mkdir()


@pytest.mark.parametrize("name, needle", [
    ("missing.wav", "no such file"), ("adir.wav", "is a directory"), ("corrupt.wav", "not a readable audio file"),
    ("empty.wav", "no audio samples"), ("nan.wav", "nan"),
])
@pytest.mark.parametrize("command", ["arrange", "separate", "condition"])
def test_bad_audio_files(cli, tmp_path, command, name, needle):
    _bad_wavs(tmp_path)
    path = tmp_path / name
    args = {"arrange": ("arrange", "--given", f"bass={path}"), "separate": ("separate", path),
            "condition": ("condition", "--ref", path)}[command]
    if command == "separate" and name == "adir.wav":  # separate takes folders: their audio files are a batch
        needle = "no WAV or FLAC files there"
    r = cli(*args, "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 2, needle, str(path))
    assert not (tmp_path / "o").exists()


def test_silent_input(cli, tmp_path):
    _bad_wavs(tmp_path)
    assert_one_line_error(cli("separate", tmp_path / "silent.wav", "--out", tmp_path / "o", *FAST), 2, "is silent")
    assert_one_line_error(cli("condition", "--ref", tmp_path / "silent.wav", "--out", tmp_path / "o", *FAST), 2,
                          "is silent")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("args, needle", [
    (("--given", "{d}/bass.wav", "--want", "kazoo"), "unknown stem 'kazoo'"),
    (("--given", "flute={d}/bass.wav"), "unknown stem 'flute'"),
    (("--given", "{d}/bass.wav", "--want", "bass"), "both given and wanted"),
    (("--given", "{d}/bass.wav", "{d}/drums.wav", "{d}/guitar.wav", "{d}/piano.wav"), "nothing left to generate"),
    (("--given", "{d}/mix.wav"), "cannot tell which stem"),
    (("--given", "{d}/bass.wav", "--want", "piano", "flute"), "flute: no such file"),
    (("--given", "{d}/bass.wav", "bass={d}/drums.wav"), "given twice"),
    (("--want", "piano"), "no stem given"),
])
def test_bad_stem_names(cli, stem_dir, tmp_path, args, needle):
    args = [a.format(d=stem_dir) for a in args]
    r = cli("arrange", *args, "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 2, needle)
    assert not (tmp_path / "o").exists()


def test_given_stems_of_different_lengths(cli, stem_dir, tmp_path):
    sf.write(tmp_path / "drums.wav", np.ones(4000, np.float32) * 0.1, 16000)
    r = cli("arrange", "--given", stem_dir / "bass.wav", tmp_path / "drums.wav", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 2, "differ in length")


def test_existing_outputs_need_force(cli, tmp_path):
    out = tmp_path / "g"
    args = ("generate", "--out", out, "--duration", "0.25", *FAST)
    assert cli(*args).exit_code == 0
    before = (out / "bass.wav").read_bytes()
    assert_one_line_error(cli(*args[:-1], "--seed", "1", "-q"), 4, "already exists", "--force")
    assert (out / "bass.wav").read_bytes() == before
    r = cli(*args, "--force")
    assert r.exit_code == 0


def test_unwritable_output_folder(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    r = cli("generate", "--out", tmp_path / "file" / "sub", "--duration", "0.25", *FAST)
    assert_one_line_error(r, 4, "not a directory")


def test_model_errors(cli, tmp_path, monkeypatch):
    assert_one_line_error(cli("generate", "--model", "nope", "--out", tmp_path / "o", *FAST), 3, "unknown model")
    r = cli("generate", "--model", "someone/absent", "--offline", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 3, "not in the cache and offline mode is on")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("generate", "--model", "someone/absent", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 3, "offline mode is on")


def test_checkpoint_hash_mismatch_via_cli(cli, tmp_path, monkeypatch, tiny_dir):
    archive_model(tiny_dir, tmp_path / "m.tar.gz")
    register_entry(tmp_path, monkeypatch, "bad", f'url = "{(tmp_path / "m.tar.gz").as_uri()}", sha256 = "{"cd" * 32}"')
    r = cli("generate", "--model", "bad", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 3, "sha256 mismatch")


def test_json_errors_are_machine_readable(cli, tmp_path):
    r = cli("separate", tmp_path / "missing.wav", "--json", "--out", tmp_path / "o")
    assert r.exit_code == 2
    payload = json.loads(r.stdout)
    assert payload == {"ok": False, "schema": 1, "error": payload["error"], "exit_code": 2}
    assert "no such file" in payload["error"]


def test_device_not_available(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("generate", "--device", "cuda", "--out", tmp_path / "o", "-q")
    assert_one_line_error(r, 2, "CUDA is not available")


def test_interrupt_leaves_no_partial_output(cli, tmp_path, monkeypatch):
    calls = []
    real_write = sf.write

    def interrupted(*a, **kw):
        calls.append(a[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(*a, **kw)

    monkeypatch.setattr(sf, "write", interrupted)
    out = tmp_path / "g"
    r = cli("generate", "--out", out, "--duration", "0.25", *FAST)
    assert_one_line_error(r, 130, "interrupted")
    assert not out.exists()  # not even the folder it made


def test_internal_errors_are_one_line_unless_debug(cli, tmp_path, monkeypatch):
    from mtldm_cli import pipeline

    def boom(*a, **kw):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(pipeline.MultiTrackPipeline, "generate", boom)
    r = cli("generate", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 1, "internal error", "MTLDM_DEBUG")


@pytest.mark.parametrize("name, found", [
    ("bass.wav", ["bass"]), ("Drums_take2.flac", ["drums"]), ("b.wav", ["bass"]), ("gu.wav", ["guitar"]),
    ("piano-left.wav", ["piano"]), ("mix.wav", []), ("bassoon.wav", []), ("x.wav", []),
    # what DAWs and stem packs export (issue 17): numbers, song prefixes, abbreviations, synonyms
    ("01 Bass.wav", ["bass"]), ("Song_Bass.wav", ["bass"]), ("SongBass.wav", ["bass"]), ("gtr.wav", ["guitar"]),
    ("keys.wav", ["piano"]), ("bassline.wav", ["bass"]), ("03 - Electric Piano.wav", ["piano"]),
    ("Bass Guitar.wav", ["bass"]), ("04_Gtr2.wav", ["guitar"]), ("MySong - Drum Kit.wav", ["drums"]),
    ("Kick.wav", ["drums"]), ("take_b.wav", []), ("bass and keys.wav", ["bass", "piano"]),
])
def test_stem_names_from_exported_file_names(name, found):
    from pathlib import Path

    from mtldm_cli.stems import stem_candidates

    assert stem_candidates(Path(name), STEMS) == found


def test_an_ambiguous_or_unknown_file_name_lists_the_choices(cli, stem_dir, tmp_path):
    both = tmp_path / "bass and keys.wav"
    both.write_bytes((stem_dir / "bass.wav").read_bytes())
    assert_one_line_error(cli("arrange", "--given", both, "--out", tmp_path / "o"), 2, "could be bass or piano",
                          "bass=")
    odd = tmp_path / "take3.wav"
    odd.write_bytes((stem_dir / "bass.wav").read_bytes())
    assert_one_line_error(cli("arrange", "--given", odd, "--out", tmp_path / "o"), 2, "cannot tell",
                          "bass, drums, guitar, piano")


def test_arrange_with_abbreviated_file_names(cli, stem_dir, tmp_path):
    (tmp_path / "b.wav").write_bytes((stem_dir / "bass.wav").read_bytes())
    (tmp_path / "d.wav").write_bytes((stem_dir / "drums.wav").read_bytes())
    r = cli("arrange", "--given", tmp_path / "b.wav", tmp_path / "d.wav", "--want", "piano", "--out", tmp_path / "a",
            "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["info"]["given_files"] == {"bass": str(tmp_path / "b.wav"), "drums": str(tmp_path / "d.wav")}


def test_the_default_model_is_the_packaged_demo(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MTLDM_MODEL")
    r = cli("generate", "--out", tmp_path / "o", "--duration", "1", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)["info"]
    assert info["model"] == "demo" and info["source"] == "shipped in the package (demo)"
    assert info["options"]["guidance"] > 1  # conditioned: classifier-free guidance by default
    monkeypatch.setenv("MTLDM_MODEL", "tiny-random-uncond")
    r = cli("generate", "--out", tmp_path / "p", "--duration", "0.25", "--json", *FAST)
    assert json.loads(r.stdout)["info"]["model"] == "tiny-random-uncond"


@pytest.mark.slow
def test_the_default_demo_takes_a_prompt_a_reference_and_a_prompted_arrangement_offline(cli, stem_dir, tmp_path,
                                                                                          monkeypatch):
    """Issue 15: on a fresh clone, offline, the shipped demo serves `generate --prompt`, `condition --ref`
    (whose default model is demo, not the published one that needs a download) and `arrange --prompt`."""
    monkeypatch.delenv("MTLDM_MODEL")
    monkeypatch.setenv("MTLDM_OFFLINE", "1")
    short = ("--duration", "1", "--json", *FAST)
    runs = {"plain": cli("generate", "--out", tmp_path / "plain", *short),
            "funk": cli("generate", "--prompt", "a fast funk song", "--out", tmp_path / "funk", *short),
            "ballad": cli("generate", "--prompt", "a slow ballad with grand piano", "--out", tmp_path / "ballad", *short),
            "ref": cli("condition", "--ref", stem_dir / "mix.wav", "--out", tmp_path / "ref", *short),
            "arr": cli("arrange", "--given", stem_dir / "bass.wav", "--want", "piano", "--prompt", "a jazz song",
                       "--given-guidance", "2", "--out", tmp_path / "arr", "--json", *FAST)}
    for name, r in runs.items():
        assert r.exit_code == 0, (name, r.stderr)
        assert json.loads(r.stdout)["info"]["model"] == "demo"
    drums = {k: sf.read(tmp_path / k / "drums.wav")[0] for k in ("plain", "funk", "ballad", "ref")}
    assert all(np.abs(d).max() > 1e-3 for d in drums.values())
    for a, b in (("plain", "funk"), ("funk", "ballad"), ("plain", "ref")):
        assert not np.array_equal(drums[a], drums[b]), (a, b)  # the prompt and the reference reach the UNet
    arranged = json.loads(runs["arr"].stdout)["info"]
    assert arranged["prompt"] == "a jazz song" and arranged["options"]["given_guidance"] == 2.0
    # the packaged model's own arrangement defaults reach the command: RePaint (ddim, 4 resamples)
    assert (arranged["options"]["sampler"], arranged["options"]["resample"]) == ("ddim", 4)
    assert sorted(p.name for p in (tmp_path / "arr").glob("*.wav")) == ["bass.wav", "mix.wav", "piano.wav"]


def test_library_errors_are_spelled_as_flags(cli, stem_dir, tmp_path):
    r = cli("separate", stem_dir / "mix.wav", "--sigma-min", "2", "--sigma-max", "1", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 2, "--sigma-min 2.0 and --sigma-max 1.0: the smallest noise level")
    r = cli("generate", "--seed", str(2**63), "--steps", "1", "-q", "--out", tmp_path / "o")
    assert_one_line_error(r, 2, f"--seed {2**63}")
    r = cli("generate", "--stems", "flute", "--out", tmp_path / "o", *FAST)
    assert_one_line_error(r, 2, "--stems: unknown stem 'flute'")
    assert not (tmp_path / "o").exists()


def test_progress_off_a_terminal_is_plain_timestamped_lines_with_each_stage(cli, tmp_path):
    """With stderr redirected a long run printed nothing between loading and the end."""
    r = cli("generate", "--out", tmp_path / "o", "--steps", "3", "--duration", "1")
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert [ln.split("] ", 1)[1].rsplit(" (", 1)[0] for ln in lines] == [
        "generating: step 1/3", "generating: step 3/3", "generating: decoding"]
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", ln) for ln in lines)
    assert "[" not in cli("generate", "--out", tmp_path / "q", "--steps", "3", "--duration", "1", "-q").stderr


def test_shell_completion_completes_commands_and_options():
    import os
    import subprocess
    import sys

    code = "from mtldm_cli.cli import app; app(prog_name='mtldm')"
    env = os.environ | {"_MTLDM_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env | {"COMP_WORDS": "mtldm gen"}, capture_output=True, text=True)
    assert done.stdout.split() == ["generate"]
    env["COMP_CWORD"] = "2"
    done = subprocess.run([sys.executable, "-c", code], env=env | {"COMP_WORDS": "mtldm arrange --bit"}, capture_output=True, text=True)
    assert done.stdout.split() == ["--bit-depth"]


@pytest.mark.slow
@pytest.mark.parametrize("args, code", [
    (["generate", "--steps", "2", "--duration", "1"], 0),
    (["generate", "--steps", "0"], 2),  # a usage error: click's, before our code runs
    (["generate", "--bogus"], 2),
    (["separate", "missing.wav"], 2),
    (["generate", "--model", "no-such-model"], 3),
    (["generate", "--out", "{existing}"], 4),
    (["models"], 0),
    (["evaluate", "--est", "{stems}", "--ref", "{stems}"], 0),
])
def test_json_is_one_document_on_stdout_for_success_and_every_error_class(stem_dir, tmp_path, args, code):
    import subprocess
    import sys

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "bass.wav").write_bytes(b"x")
    args = [a.format(existing=existing, stems=stem_dir) for a in args]
    if "--out" not in args and args[0] in ("generate", "separate"):
        args += ["--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-m", "mtldm_cli", *args, "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == code, done.stderr
    doc = json.loads(done.stdout)  # exactly one document: json.loads refuses anything after it
    assert doc["schema"] == 1 and doc["ok"] == (code == 0)
    if code:
        assert doc["exit_code"] == code and doc["error"]
