"""Issue 17: outputs a musician can trust (exact seeds, DAW-ready files, early and clear refusals),
each checked through the CLI or the library's public seams."""

from __future__ import annotations

import json
import re
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
