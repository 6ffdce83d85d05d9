"""Names that come from outside data (URLs, model configs, manifests, archive members) and end up in
a path: reduced to one safe component, or refused."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
STEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a stem names a file: <stem>.wav


def safe_component(text: str, default: str) -> str:
    """``text`` as one path component: runs of anything but letters, digits, ``.``, ``_`` and ``-``
    become ``_``, leading dots and dashes go (no ``..``, no hidden file, no option), at most 100
    characters; ``default`` if nothing is left."""
    return _UNSAFE.sub("_", text).lstrip(".-_")[:100] or default


def check_stem_names(stems) -> None:
    """Raise ``ValueError`` unless every stem name is a plain file name stem (STEM_NAME)."""
    for stem in stems:
        if not isinstance(stem, str) or not STEM_NAME.fullmatch(stem):
            raise ValueError(f"stem name {stem!r} is not a plain name (letters, digits, '_', '-'; 64 at most)")
