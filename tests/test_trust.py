"""Issue 17: outputs a musician can trust (exact seeds, DAW-ready files, early and clear refusals),
each checked through the CLI or the library's public seams."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from .conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


def test_python_requirement_matches_what_the_package_imports():
    """pyproject said >= 3.10 while the package imports tomllib (3.11)."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = tuple(int(x) for x in re.fullmatch(r">=\s*(\d+)\.(\d+)", spec).groups())
    uses_tomllib = any("import tomllib" in p.read_text() for p in (ROOT / "mtldm_cli").rglob("*.py"))
    assert not uses_tomllib or floor >= (3, 11)


def _mix_variant(stem_dir: Path, tmp_path: Path, kind: str) -> Path:
    stems = {s: sf.read(stem_dir / f"{s}.wav", dtype="float32")[0] for s in ("bass", "drums", "guitar", "piano")}
    mix = sum(stems.values())
    mix = {"scaled": 0.5 * mix, "without bass": mix - stems["bass"]}[kind]
    path = tmp_path / f"{kind}.wav"
    sf.write(path, mix, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("kind, warned", [("scaled", False), ("without bass", True)])
def test_evaluate_warns_when_the_mixture_is_not_the_sum_of_the_references(cli, stem_dir, tmp_path, kind, warned):
    mix = _mix_variant(stem_dir, tmp_path, kind)
    r = cli("evaluate", "--est", stem_dir, "--ref", stem_dir, "--mix", mix, "--json")
    assert r.exit_code == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert any("not the sum of the reference stems" in w for w in warnings) == warned
    assert ("not the sum" in r.stderr) == warned


def test_generated_stems_fade_in_and_out_without_a_step_to_silence(cli, tmp_path):
    """Every generated stem ended in 16 ms of exact zeros (the vocoder's last hop), a click."""
    out = tmp_path / "o"
    r = cli("generate", "--model", "demo", "--steps", "2", "--duration", "1", "--seed", "0", "--float", "--out", out)
    assert r.exit_code == 0, r.stderr
    for stem in ("bass", "drums", "guitar", "piano"):
        wav, sr = sf.read(out / f"{stem}.wav", dtype="float32")
        assert np.count_nonzero(wav[-256:] == 0) < 8, stem
        edge = round(0.002 * sr)
        assert np.abs(wav[:edge]).max() < 0.1 * np.abs(wav).max() + 1e-6, stem
        assert np.abs(wav[-edge:]).max() < 0.1 * np.abs(wav).max() + 1e-6, stem


REFUSALS = [  # each needs only the flags, the inputs and what the model is: no torch, no weights
    ["generate", "--model", "tiny-random-uncond", "--prompt", "funk"],
    ["condition", "--model", "tiny-random-uncond", "--ref", "{wav}"],
    ["arrange", "--model", "tiny-random-uncond", "--given", "{wav}", "--prompt", "funk"],
    ["arrange", "--model", "tiny-random", "--given", "{wav}", "--want", "flute"],
    ["generate", "--model", "tiny-random", "--stems", "flute"],
    ["generate", "--model", "tiny-random", "--format", "flac", "--bit-depth", "32f"],
    ["separate", "{wav}", "--model", "tiny-random", "--out", "{existing}"],
    ["generate", "--model", "tiny-random", "--device", "mps" if platform.system() != "Darwin" else "cuda"],
]


@pytest.mark.parametrize("args", REFUSALS, ids=lambda a: " ".join(a[:5]))
def test_refusals_come_before_torch_and_the_weights_and_leave_no_folder(tmp_path, stem_dir, args):
    """``--prompt`` on an unconditional model was refused after ~15 s of loading, and a failed run left an
    empty --out folder. Run in a fresh interpreter: torch must not even be imported."""

    existing = tmp_path / "existing"
    existing.mkdir()
    for s in ("bass", "drums", "guitar", "piano"):
        (existing / f"{s}.wav").write_bytes(b"earlier")
    args = [a.format(wav=stem_dir / "bass.wav", existing=existing) for a in args]
    out = tmp_path / "new" / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    code = ("import sys; from typer.testing import CliRunner; from mtldm_cli.cli import app\n"
            f"r = CliRunner().invoke(app, {args!r})\n"
            "print(r.exit_code, 'torch' in sys.modules); print(r.stderr, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    exit_code, torch_loaded = done.stdout.split()
    assert exit_code in ("2", "4") and "error:" in done.stderr, done.stderr
    assert torch_loaded == "False", done.stderr
    assert not (tmp_path / "new").exists()
    assert {p.read_bytes() for p in existing.iterdir()} == {b"earlier"}


def test_a_run_that_fails_after_loading_leaves_no_folder(cli, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "a" / "out"
    result = cli("condition", "--ref", silent, "--out", out, "--steps", "2")
    assert_one_line_error(result, 2, "silent")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("want", [["--want", "guitar", "piano"], ["--want", "guitar,piano"], ["--want", "guitar", "--want", "piano"]])
def test_want_takes_words_or_a_comma_list(cli, stem_dir, tmp_path, want):
    out = tmp_path / "o"
    r = cli("arrange", "--given", stem_dir / "bass.wav", *want, "--out", out, "--steps", "2", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["info"]["want"] == ["guitar", "piano"]


def _daw_stems(folder: Path, rate: int = 44100, seconds: float = 1.5) -> dict[str, np.ndarray]:
    """Stereo 24-bit stems named the way a DAW exports them."""
    t = np.arange(int(rate * seconds)) / rate
    bass = np.stack([0.3 * np.sin(2 * np.pi * 55 * t), 0.25 * np.sin(2 * np.pi * 55 * t + 0.3)], axis=1)
    drums = np.random.default_rng(0).normal(0, 0.1, (t.size, 2)) * (np.sin(2 * np.pi * 2 * t) > 0.7)[:, None]
    files = {"01 Bass.wav": bass, "Song_Drums.wav": drums}
    folder.mkdir()
    for name, data in files.items():
        sf.write(folder / name, data.astype(np.float32), rate, subtype="PCM_24")
    return {name: sf.read(folder / name, dtype="float32")[0] for name in files}


def test_stems_from_a_daw_come_back_daw_ready(cli, tmp_path):
    """44.1 kHz / 24-bit stereo stems came back as 16 kHz / 16-bit mono, with no warning."""
    given = _daw_stems(tmp_path / "daw")
    out = tmp_path / "o"
    r = cli("arrange", "--given", *sorted((tmp_path / "daw").iterdir()), "--want", "keys", "--out", out, "--steps", "2")
    assert r.exit_code == 0, r.stderr
    n = len(given["01 Bass.wav"])
    for stem in ("bass", "drums", "piano", "mix"):
        info = sf.info(out / f"{stem}.wav")
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 2, "PCM_24", n), stem
    for stem, name in (("bass", "01 Bass.wav"), ("drums", "Song_Drums.wav")):
        np.testing.assert_array_equal(sf.read(out / f"{stem}.wav", dtype="float32")[0], given[name])
    assert np.abs(sf.read(out / "piano.wav")[0]).max() > 0
    run = json.loads((out / "run.json").read_text())
    assert (run["sample_rate"], run["channels"], run["subtype"], run["format"]) == (44100, 2, "pcm24", "wav")


def test_rate_channels_format_and_bit_depth_can_be_chosen(cli, tmp_path):
    _daw_stems(tmp_path / "daw")
    out = tmp_path / "o"
    r = cli("arrange", "--given", tmp_path / "daw" / "01 Bass.wav", "--want", "piano", "--out", out, "--steps", "2",
            "--sample-rate", "48000", "--channels", "1", "--format", "flac", "--bit-depth", "16")
    assert r.exit_code == 0, r.stderr
    for stem in ("bass", "piano", "mix"):
        info = sf.info(out / f"{stem}.flac")
        assert (info.samplerate, info.channels, info.subtype, info.format) == (48000, 1, "PCM_16", "FLAC"), stem
    assert not list(out.glob("*.wav"))
    r = cli("generate", "--out", tmp_path / "g", "--steps", "2", "--duration", "1", "--bit-depth", "32f",
            "--sample-rate", "22050", "--channels", "2")
    assert r.exit_code == 0, r.stderr
    info = sf.info(tmp_path / "g" / "drums.wav")
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 2, "FLOAT", 22050)


@pytest.mark.parametrize("layout", ["N", "CN", "NC"])
def test_arrays_in_every_documented_layout_give_the_same_stems(pipe, layout):
    """soundfile's [N, C] was read as [C, N]: 1-sample stems, no error."""
    t = np.arange(16000) / 16000
    mono = (0.3 * np.sin(2 * np.pi * 110 * t)).astype(np.float32)
    stereo = np.stack([mono, mono])
    array = {"N": mono, "CN": stereo, "NC": stereo.T.copy()}[layout]
    out = pipe.arrange({"bass": array}, ["piano"], steps=2, seed=0)
    assert out.stems["piano"].shape[-1] == 16000 and out.channels == (1 if layout == "N" else 2)
    reference = pipe.arrange({"bass": mono}, ["piano"], steps=2, seed=0)
    np.testing.assert_allclose(out.stems["piano"].reshape(-1, 16000)[0], reference.stems["piano"], atol=1e-6)
    sep = pipe.separate(array, steps=2, resamples=1, seed=0)
    assert sep.stems["bass"].shape[-1] == 16000


@pytest.mark.parametrize("shape", [(0,), (2, 0), (4, 4), (16000, 16000), (2, 3, 16000)])
def test_an_ambiguous_or_empty_array_is_one_error_naming_the_argument(pipe, shape):
    from mtldm_cli.errors import AudioError

    array = np.zeros(shape, np.float32) if np.prod(shape) < 10**6 else np.zeros((16000, 16000), np.float32)
    with pytest.raises(AudioError, match="mixture"):
        pipe.separate(array, steps=2)
    with pytest.raises(AudioError, match="given stem 'bass'"):
        pipe.arrange({"bass": array}, steps=2)


def test_a_download_says_its_size_its_progress_and_how_to_do_it_by_hand(tmp_path, monkeypatch):
    """``condition`` started a multi-GB download with no size shown and no word of `mtldm convert`."""
    from mtldm_cli.errors import ModelError
    from mtldm_cli.sources import resolve_model

    release = tmp_path / "release.tar.gz"
    release.write_bytes(b"\0" * 3_000_000)
    entry = ("[models.official]\ndescription = 'x'\nformat = 'mt-musicldm'\n"
             "source = { url = '{url}', components = { vae = '{url}' } }\n"
             "audio = { sample_rate = 16000, segment_seconds = 10.24, stems = ['bass', 'drums', 'guitar', 'piano'] }\n")
    registry = tmp_path / "reg.toml"
    monkeypatch.setenv("MTLDM_REGISTRY", str(registry))
    registry.write_text(entry.replace("{url}", (tmp_path / "missing.tar.gz").as_uri()))
    with pytest.raises(ModelError, match=r"download failed.*mtldm convert <release> --vae <vae file> --out DIR"):
        resolve_model("official", cache_dir=tmp_path / "c")
    with pytest.raises(ModelError, match="offline.*mtldm convert"):
        resolve_model("official", cache_dir=tmp_path / "c", offline=True)
    registry.write_text(entry.replace("{url}", release.as_uri()))
    said: list[str] = []
    with pytest.raises(Exception):  # noqa: B017  (the bytes are no release: the conversion fails after the download)
        resolve_model("official", cache_dir=tmp_path / "c", progress=said.append)
    first = next(m for m in said if m.startswith("downloading"))
    assert "(3.0 MB)" in first and "mtldm convert" in first
    assert any("3.0 MB of 3.0 MB (100%)" in m for m in said)


def _rows(png: Path, count: int) -> list[float]:
    """Mean brightness of each spectrogram row of a plot (layout constants of mtldm_cli.plot)."""
    from PIL import Image

    from mtldm_cli.plot import AXIS_HEIGHT, LABEL_WIDTH, ROW_HEIGHT

    img = np.asarray(Image.open(png).convert("L"), np.float64)
    top = img.shape[0] - AXIS_HEIGHT - count * (ROW_HEIGHT + 2)
    return [img[top + k * (ROW_HEIGHT + 2):top + k * (ROW_HEIGHT + 2) + ROW_HEIGHT, LABEL_WIDTH:].mean() for k in range(count)]


def test_plot_draws_every_stem_and_the_mix_on_one_scale(cli, stem_dir, tmp_path):
    folder = tmp_path / "song"
    folder.mkdir()
    for s in ("bass", "drums", "guitar", "piano"):
        wav, sr = sf.read(stem_dir / f"{s}.wav", dtype="float32")
        sf.write(folder / f"{s}.wav", wav * (s != "drums"), sr)  # silent drums
    r = cli("plot", folder, "--json")
    assert r.exit_code == 0, r.stderr
    rows = _rows(folder / "spectrograms.png", 5)  # bass, drums, guitar, piano, then the mix
    assert rows[1] < 1 and min(rows[0], rows[2], rows[3], rows[4]) > 8, rows
    assert_one_line_error(cli("plot", folder), 4, "already exists")


def test_plot_flag_writes_the_picture_with_the_result(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("generate", "--out", out, "--steps", "2", "--duration", "1", "--plot", "--json")
    assert r.exit_code == 0, r.stderr
    assert "spectrograms.png" in json.loads((out / "run.json").read_text())["files"]
    from PIL import Image

    assert Image.open(out / "spectrograms.png").format == "PNG"
    r = cli("generate", "--out", out, "--steps", "2", "--duration", "1", "--force")
    assert r.exit_code == 0 and not (out / "spectrograms.png").exists()  # no stale picture beside new stems


@pytest.mark.parametrize("model", ["demo-v1", "demo", "tiny-random"])
def test_every_command_gives_byte_identical_files_for_one_seed(cli, stem_dir, tmp_path, model):
    """Same inputs, same seed: the same bytes from every writing command, with Griffin-Lim (demo-v1),
    Vocos plus our CLAP in float16 files (demo) and HiFi-GAN plus CLAP (tiny-random), even when
    torch's global RNG has moved on in between."""
    import torch

    runs = {
        "generate": ["generate", "--duration", "1"],
        "arrange": ["arrange", "--given", stem_dir / "bass.wav", "--want", "piano"],
        "separate": ["separate", stem_dir / "mix.wav", "--resamples", "1"],
    }
    if model != "demo-v1":
        runs["condition"] = ["condition", "--ref", stem_dir / "mix.wav", "--duration", "1"]
        runs["generate"] += ["--prompt", "funk"]
    for name, args in runs.items():
        for take in ("a", "b"):
            torch.rand(5)
            r = cli(*args, "--model", model, "--seed", "3", "--steps", "2", "-q", "--out", tmp_path / take / name)
            assert r.exit_code == 0, r.stderr
        files = sorted(p.name for p in (tmp_path / "a" / name).glob("*.wav"))
        assert len(files) >= 3
        for f in files:
            assert (tmp_path / "a" / name / f).read_bytes() == (tmp_path / "b" / name / f).read_bytes(), (name, f)
