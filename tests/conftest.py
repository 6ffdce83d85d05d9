"""Shared fixtures. Nothing here touches the network: the hub endpoint points at a closed local port."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

_TMP = Path(tempfile.mkdtemp(prefix="mtldm-tests-"))
os.environ.update(
    MTLDM_CACHE=str(_TMP / "cache"),
    HF_HOME=str(_TMP / "hf"),
    HF_ENDPOINT="http://127.0.0.1:9",
    HF_HUB_DISABLE_TELEMETRY="1",
    MTLDM_MODEL="tiny-random",  # the commands' default model in these tests (users get demo)
)
for var in ("MTLDM_OFFLINE", "HF_HUB_OFFLINE", "MTLDM_REGISTRY", "MTLDM_DEBUG"):
    os.environ.pop(var, None)

SR = 16000
STEMS = ("bass", "drums", "guitar", "piano")


def synth_stems(seconds: float = 2.0, sr: int = SR, seed: int = 0) -> dict[str, np.ndarray]:
    """Four distinguishable, audible stems: low sine, noise bursts, mid sine, high sine chord."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    drums = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0.7) * 0.2
    return {
        "bass": 0.3 * np.sin(2 * np.pi * 55 * t),
        "drums": drums,
        "guitar": 0.2 * np.sin(2 * np.pi * 330 * t) * (t % 0.5 < 0.3),
        "piano": 0.1 * (np.sin(2 * np.pi * 523 * t) + np.sin(2 * np.pi * 659 * t)),
    }


@pytest.fixture(scope="session")
def pipe():
    from mtldm_cli import MultiTrackPipeline

    return MultiTrackPipeline.from_pretrained("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def uncond_pipe():
    from mtldm_cli import MultiTrackPipeline

    return MultiTrackPipeline.from_pretrained("tiny-random-uncond", device="cpu")


@pytest.fixture(scope="session")
def tiny_dir(pipe) -> Path:
    return pipe.source.path


@pytest.fixture
def stem_dir(tmp_path) -> Path:
    """A folder with bass/drums/guitar/piano/mix WAVs (2 s, 16 kHz, 16-bit)."""
    folder = tmp_path / "stems"
    folder.mkdir()
    stems = synth_stems()
    for name, wav in stems.items():
        sf.write(folder / f"{name}.wav", wav.astype(np.float32), SR, subtype="PCM_16")
    sf.write(folder / "mix.wav", np.sum(list(stems.values()), axis=0).astype(np.float32), SR, subtype="PCM_16")
    return folder


@pytest.fixture
def cli(monkeypatch):
    """Invoke ``mtldm`` in-process; returns the click Result (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from mtldm_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def register_registry(tmp_path, monkeypatch, body: str) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(body)
    monkeypatch.setenv("MTLDM_REGISTRY", str(path))


AUDIO = 'audio = { sample_rate = 16000, segment_seconds = 10.24, stems = ["bass", "drums", "guitar", "piano"] }'


def register_entry(tmp_path, monkeypatch, name: str, source: str, audio: str | None = None) -> None:
    """Register one model entry in an extra registry file."""
    audio_line = f"audio = {{ {audio} }}" if audio else AUDIO
    register_registry(tmp_path, monkeypatch,
              f'[models.{name}]\ndescription = "test"\nformat = "mtldm"\nsource = {{ {source} }}\n{audio_line}\n')


def archive_model(src: Path, dest: Path) -> str:
    """A model folder as a .tar.gz (as a URL source serves it); returns its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(src, arcname="model")
    dest.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def assert_one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr + result.stdout
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


REV = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, repo: str, src: Path) -> None:
    """Lay a model out exactly as huggingface_hub's cache holds a downloaded snapshot."""
    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(src, root / "snapshots" / REV)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REV)
