"""Batch manifests: one job per line, each with its own inputs and options (JSON Lines or CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..names import safe_component

PATH_KEYS = {"mixture", "ref"}
FLOAT_KEYS = {"duration"}


def read_manifest(path: Path, allowed: set[str]) -> dict[str, dict[str, Any]]:
    """Jobs by name from ``path``: JSON Lines (one object a line; ``#`` lines and blank ones skipped)
    or CSV (a header row; empty cells left out). ``name`` names the job's folder (default
    ``job-0001``...); any other key must be in ``allowed``. File paths (``mixture``, ``ref``, and
    ``given``'s) are relative to the manifest's folder. A format problem refuses the whole manifest,
    naming its line; a bad value is the job's own error, when it runs."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read the manifest ({e.strerror or e})", "check the path") from None
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = [(k + 2, {key.strip(): v.strip() for key, v in row.items() if key and v is not None and v.strip()})
                for k, row in enumerate(reader)]
    else:
        for k, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{k}: not a JSON object ({e.msg})", "write one JSON object a line (JSON Lines)") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{k}: not a JSON object", "write one JSON object a line (JSON Lines)")
            rows.append((k, row))
    if not rows:
        raise InputError(f"{path}: holds no jobs", "write one job a line")
    jobs: dict[str, dict[str, Any]] = {}
    for n, (where, row) in enumerate(rows, 1):
        unknown = sorted(set(row) - allowed - {"name"})
        if unknown:
            raise InputError(f"{path}:{where}: unknown key(s) {', '.join(unknown)}", f"this command's keys: name, {', '.join(sorted(allowed))}")
        name = safe_component(str(row.pop("name", "")), "") or f"job-{n:04d}"
        if name in jobs:
            raise InputError(f"{path}:{where}: job name '{name}' repeats", "give every job its own name")
        jobs[name] = {key: _value(key, v, path.parent) for key, v in row.items()}
    return jobs


def required(value: Any, key: str) -> Any:
    """A job's input (``mixture``, ``ref``, ``given``), or the job's own error when its line lacks it."""
    if not value:
        raise InputError(f"the job's line has no '{key}'", f"add its {key}")
    return value


def _value(key: str, value: Any, base: Path) -> Any:
    if key in PATH_KEYS:
        return base / str(value)
    if key == "given":
        return _given(value, base)
    if key == "want" and isinstance(value, str):
        return [w.strip() for w in value.replace(";", ",").split(",") if w.strip()]
    if key in FLOAT_KEYS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # the job's own error
    return value


def _given(value: Any, base: Path) -> Any:
    """``{"bass": "a.wav"}``, ``["bass.wav", ...]`` or, in CSV, ``bass=a.wav;drums.wav``, paths made
    relative to the manifest; a list keeps telling stems by file name."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(";") if v.strip()]
    if isinstance(value, dict):
        return {str(stem): base / str(p) for stem, p in value.items()}
    if isinstance(value, list):
        items: list[Any] = []
        for v in value:
            stem, sep, p = str(v).partition("=")
            items.append((stem.strip().lower(), base / p.strip()) if sep else base / stem.strip())
        return items
    return value
