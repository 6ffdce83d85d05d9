"""Typed errors: the library raises these, the CLI turns each into one line and an exit code."""

from __future__ import annotations


class MtldmError(Exception):
    """Base error. ``str(err)`` is a complete sentence: what, where, and what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


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
    """Outputs that cannot be written (existing files without --force, unwritable folder)."""

    exit_code = 4
