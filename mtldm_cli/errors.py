"""Typed errors: the library raises these, the CLI turns each into one line and an exit code.

A message or hint names the parameters it is about as ``{name}`` placeholders, with the values as
keyword arguments: ``InputError("{steps}: must be at least 1", steps=0)``. ``str(err)`` spells them
as a Python caller wrote them (``steps=0``); the CLI renders the same error with its own spellings
(``--steps 0``), so neither layer speaks the other's language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
NAME_ONLY: Any = ...  # a placeholder's value when only the parameter's name is meant: ``{folder}``


class MtldmError(Exception):
    """Base error. ``str(err)`` is a complete sentence: what, where, and what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, **params: Any):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.params = params

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The sentence, with each parameter spelled for Python (``flags`` None) or for the command
        line: ``flags`` maps a parameter to its option (default ``--name-with-dashes``)."""
        names = {k: _spell(k, v, flags) for k, v in self.params.items()}

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: names.get(m[1], m[0]), text)

        return f"{fill(self.message)}; {fill(self.hint)}" if self.hint else fill(self.message)

    def __str__(self) -> str:
        return self.render()


def _spell(name: str, value: Any, flags: Mapping[str, str] | None) -> str:
    if flags is None:
        return name if value is NAME_ONLY else f"{name}={value!r}"
    flag = flags.get(name) or "--" + name.replace("_", "-")
    if value is NAME_ONLY or value is True:
        return flag
    if value is False:
        return "--no-" + flag.removeprefix("--")
    return f"{flag} {value}"


class InputError(MtldmError):
    """Bad user input: audio files, stem names, option values."""

    exit_code = 2


class AudioError(InputError):
    """An audio file that cannot be used (missing, corrupt, empty, NaN, silent...)."""


class StemError(InputError):
    """Unknown stem names, a stem both given and wanted, nothing left to generate."""


class DataError(InputError):
    """Data that cannot be made or read: no synthesizer, a bad SoundFont, a damaged dataset."""


class ModelError(MtldmError):
    """A model that cannot be found, downloaded, verified or loaded."""

    exit_code = 3


class OutputError(MtldmError):
    """Outputs that cannot be written (existing files without ``force``, unwritable folder)."""

    exit_code = 4


def first_problem(error) -> str:
    """A pydantic ``ValidationError``'s first problem as ``field.path: message``."""
    err = error.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}"
