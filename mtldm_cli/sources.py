"""Model resolution with our source kinds bound: the tiny built-in models and the official converter.

``checkpoints`` resolves names, folders, hub repos and URLs; what needs model code (building a tiny
model, converting the authors' release) comes from here, one layer up, so neither imports the other.
Both are imported only when a model is built or converted: nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import tiny
from .checkpoints import Builtin, Entry, Makers, ResolvedModel
from .checkpoints import is_cached as _is_cached
from .checkpoints import resolve_model as _resolve_model


def _convert(*args, **kwargs):
    from . import convert

    return convert.convert(*args, **kwargs)


MAKERS = Makers(builtins={name: Builtin(build, tiny.BUILD_VERSION) for name, build in tiny.BUILDERS.items()},
                convert=_convert)


def resolve_model(spec: str, *, revision: str | None = None, offline: bool | None = None,
                  cache_dir: str | os.PathLike | None = None,
                  progress: Callable[[str], None] | None = None) -> ResolvedModel:
    """:func:`checkpoints.resolve_model` with every source kind mtldm knows."""
    return _resolve_model(spec, revision=revision, offline=offline, cache_dir=cache_dir, progress=progress,
                          makers=MAKERS)


def is_cached(entry: Entry, cache_dir: str | os.PathLike | None = None) -> bool:
    return _is_cached(entry, cache_dir, MAKERS)

