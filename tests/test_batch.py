"""Issue 18's batch mode: many jobs from one model load, each in its own folder, a bad one reported
while the rest go on, finished ones skipped on --resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from .conftest import assert_one_line_error

FAST = ("--steps", "2", "--duration", "1")


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_generate_many_is_batched_and_each_clip_is_what_its_seed_gives_alone(cli, tmp_path):
    out = tmp_path / "many"
    r = cli("generate", "--num", "3", "--seed", "5", "--batch-size", "2", *FAST, "--prompt", "funk", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    lines = _lines(r.stdout)
    assert [d.get("job") for d in lines[:-1]] == ["seed-5", "seed-6", "seed-7"] and all(d["ok"] for d in lines)
    assert lines[-1]["summary"] == {"jobs": 3, "written": 3, "skipped": 0, "failed": 0}
    assert [json.loads((out / f"seed-{s}" / "run.json").read_text())["batch"] for s in (5, 6, 7)] == [2, 2, 1]
    alone = tmp_path / "alone"
    assert cli("generate", "--seed", "6", *FAST, "--prompt", "funk", "--out", alone, "--float", "-q").exit_code == 0
    r = cli("generate", "--seeds", "6", *FAST, "--prompt", "funk", "--out", tmp_path / "one", "--float", "-q")
    assert r.exit_code == 0, r.stderr
    batched = cli("generate", "--seeds", "9,6", *FAST, "--prompt", "funk", "--out", tmp_path / "two", "--float", "-q")
    assert batched.exit_code == 0, batched.stderr
    for stem in ("bass", "drums", "guitar", "piano"):
        ref = sf.read(alone / f"{stem}.wav")[0]
        np.testing.assert_array_equal(sf.read(tmp_path / "one" / "seed-6" / f"{stem}.wav")[0], ref)
        np.testing.assert_allclose(sf.read(tmp_path / "two" / "seed-6" / f"{stem}.wav")[0], ref, atol=1e-5)


def test_resume_skips_finished_clips_and_rewrites_nothing(cli, tmp_path):
    out = tmp_path / "o"
    assert cli("generate", "--seeds", "1,2", *FAST, "--out", out, "-q").exit_code == 0
    before = (out / "seed-1" / "mix.wav").read_bytes()
    shutil.rmtree(out / "seed-2")
    r = cli("generate", "--seeds", "1,2,3", *FAST, "--out", out, "--resume", "--json")
    assert r.exit_code == 0, r.stderr
    assert _lines(r.stdout)[-1]["summary"] == {"jobs": 3, "written": 2, "skipped": 1, "failed": 0}
    assert (out / "seed-1" / "mix.wav").read_bytes() == before and (out / "seed-3" / "run.json").is_file()
    assert_one_line_error(cli("generate", "--seeds", "1,2", *FAST, "--out", out), 4, "already exists")


def test_separate_many_reports_a_bad_file_and_goes_on(cli, stem_dir, tmp_path):
    songs = tmp_path / "songs"
    for name in ("a", "b"):
        (songs / name).mkdir(parents=True)
        shutil.copy(stem_dir / "mix.wav", songs / name / "mix.wav")
    (songs / "bad").mkdir()
    (songs / "bad" / "mix.wav").write_bytes(b"not audio")
    files = [songs / "a" / "mix.wav", songs / "bad" / "mix.wav", songs / "b" / "mix.wav"]
    out = tmp_path / "separated"
    r = cli("separate", *files, "--steps", "2", "--resamples", "1", "--out", out, "--json")
    assert r.exit_code == 2
    lines = _lines(r.stdout)
    assert [(d["job"], d["ok"]) for d in lines[:-1]] == [("a_mix", True), ("bad_mix", False), ("b_mix", True)]
    assert "not a readable audio file" in lines[1]["error"] and lines[-1]["failed"] == ["bad_mix"]
    assert sorted(p.name for p in out.iterdir()) == ["a_mix", "b_mix"]
    (songs / "bad" / "mix.wav").unlink()
    shutil.copy(stem_dir / "mix.wav", songs / "bad" / "mix.wav")
    r = cli("separate", *files, "--steps", "2", "--resamples", "1", "--out", out, "--resume", "--json")
    assert r.exit_code == 0 and _lines(r.stdout)[-1]["summary"]["written"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--num", "2", "--seeds", "1,2"], "give one of them"),
    (["--seed", "1", "--seeds", "1,2"], "give one of them"),
    (["--seeds", "1,1"], "different seeds"),
    (["--seeds", "a,b"], "comma-separated"),
    (["--resume"], "only for a batch"),
])
def test_bad_batch_flags_are_one_line(cli, tmp_path, args, needle):
    assert_one_line_error(cli("generate", *args, "--out", tmp_path / "o"), 2, needle)


@pytest.mark.slow
def test_help_and_models_need_no_torch_and_a_model_without_clap_no_clap_code():
    """`mtldm models` imported torch (850 MB, seconds) to check a cache; an unconditional model
    imported transformers' CLAP."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from mtldm_cli.cli import app\n"
            "for args in (['--help'], ['models'], ['generate', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0\n"
            "print('torch' in sys.modules)\n"
            "from mtldm_cli import MultiTrackPipeline\n"
            "MultiTrackPipeline.from_pretrained('tiny-random-uncond', device='cpu')\n"
            "print(any(m.startswith('transformers.models.clap') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_each_process_of_a_launch_names_its_rank_on_stderr(tmp_path):
    """Under accelerate launch or torchrun the processes share one log: every line says whose it is."""
    import os
    import subprocess
    import sys

    env = os.environ | {"WORLD_SIZE": "2", "RANK": "1"}
    done = subprocess.run([sys.executable, "-m", "mtldm_cli", "generate", "--out", str(tmp_path / "g"), "--steps", "0"],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and lines and all(line.startswith("[rank 1/2] ") for line in lines), done.stderr
    assert "--steps" in done.stderr


@pytest.mark.slow  # two processes under accelerate launch
def test_a_batch_under_accelerate_launch_splits_the_jobs_and_merges_one_report(stem_dir, tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    songs = [tmp_path / f"song{k}.wav" for k in range(3)]
    for song in songs:
        shutil.copy(stem_dir / "mix.wav", song)
    out = tmp_path / "sep"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "mtldm_cli", "separate", *map(str, songs),
           "--model", "tiny-random", "--steps", "2", "--resamples", "1", "--out", str(out), "--json", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _lines(done.stdout)  # only the first process prints: every job once, in order, then the summary
    assert [d["job"] for d in lines[:-1]] == ["song0", "song1", "song2"]
    assert lines[-1]["summary"]["written"] == 3 and lines[-1]["processes"] == 2
    runs = [json.loads((out / f"song{k}" / "run.json").read_text()) for k in range(3)]
    assert all(r["task"] == "separate" for r in runs)


def test_manifests_give_each_job_its_own_inputs_and_options(cli, stem_dir, tmp_path):
    """JSON Lines or CSV, one job a line: paths relative to the manifest, a bad line its own error."""
    for s in ("bass", "drums", "mix"):
        shutil.copy(stem_dir / f"{s}.wav", tmp_path / f"{s}.wav")
    (tmp_path / "gen.jsonl").write_text(
        '{"name": "slow", "seed": 1, "steps": 3, "duration": 1}\n# comment\n'
        '{"seed": 2, "steps": 2, "duration": 1, "prompt": "funk"}\n{"name": "bad", "steps": 0}\n')
    r = cli("generate", "--manifest", tmp_path / "gen.jsonl", "--out", tmp_path / "g", "--json")
    lines = _lines(r.stdout)
    assert r.exit_code == 2 and [(d["job"], d["ok"]) for d in lines[:-1]] == [("slow", True), ("job-0002", True), ("bad", False)]
    assert lines[2]["error"].startswith("steps=0")  # the manifest's key, not a flag it never used
    runs = {n: json.loads((tmp_path / "g" / n / "run.json").read_text()) for n in ("slow", "job-0002")}
    assert runs["slow"]["options"]["steps"] == 3 and runs["job-0002"]["prompt"] == "funk"
    assert runs["job-0002"]["options"]["seed"] == 2
    (tmp_path / "sep.csv").write_text("name,mixture,steps,resamples\none,mix.wav,2,1\n")
    r = cli("separate", "--manifest", tmp_path / "sep.csv", "--out", tmp_path / "s", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "s" / "one" / "run.json").read_text())["options"]["resamples"] == 1
    (tmp_path / "arr.jsonl").write_text('{"name": "a", "given": ["bass.wav"], "want": "piano", "steps": 2}\n'
                                        '{"name": "b", "given": {"bass": "bass.wav", "drums": "drums.wav"}, "steps": 2}\n')
    r = cli("arrange", "--manifest", tmp_path / "arr.jsonl", "--out", tmp_path / "a", "--json")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.stem for p in (tmp_path / "a" / "a").glob("*.wav")) == ["bass", "mix", "piano"]
    assert json.loads((tmp_path / "a" / "b" / "run.json").read_text())["given"] == ["bass", "drums"]
    (tmp_path / "cond.jsonl").write_text('{"ref": "mix.wav", "steps": 2, "duration": 1}\n')
    r = cli("condition", "--manifest", tmp_path / "cond.jsonl", "--out", tmp_path / "c", "--json")
    assert r.exit_code == 0 and (tmp_path / "c" / "job-0001" / "run.json").is_file()


@pytest.mark.parametrize("text, needle", [
    ('{"seed": 1, "colour": "red"}\n', "unknown key(s) colour"),
    ('{"name": "x", "seed": 1}\n{"name": "x", "seed": 2}\n', "job name 'x' repeats"),
    ('{"seed": 1}\nnot json\n', ":2: not a JSON object"),
    ("", "holds no jobs"),
])
def test_a_malformed_manifest_is_refused_before_any_job(cli, tmp_path, text, needle):
    (tmp_path / "m.jsonl").write_text(text)
    assert_one_line_error(cli("generate", "--manifest", tmp_path / "m.jsonl", "--out", tmp_path / "o"), 2, needle)
    assert not (tmp_path / "o").exists()


def test_evaluate_scores_a_batch_of_folders_and_averages_them(cli, stem_dir, tmp_path):
    est, ref = tmp_path / "est", tmp_path / "ref"
    for name in ("a", "b"):
        shutil.copytree(stem_dir, ref / name)
        shutil.copytree(stem_dir, est / name)
    (est / "b" / "piano.wav").unlink()  # a job that cannot be scored
    r = cli("evaluate", "--est", est, "--ref", ref, "--window", "1", "--hop", "0.5", "--json")
    assert r.exit_code == 2
    lines = _lines(r.stdout)
    assert [(d["job"], d["ok"]) for d in lines[:-1]] == [("a", True), ("b", False)]
    assert lines[0]["stems"]["bass"]["si_sdri"] > 40 and "no estimate for stem(s) piano" in lines[1]["error"]
    assert lines[-1]["mean_si_sdri"]["bass"] == pytest.approx(lines[0]["stems"]["bass"]["si_sdri"], abs=1e-3)
    assert lines[-1]["summary"] == {"jobs": 2, "scored": 1, "skipped": 0, "failed": 1}  # evaluate writes nothing
