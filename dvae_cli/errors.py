"""The exceptions for mistakes a user can fix (bad input, missing files, settings out of range).

A message that names a setting holds it as a `Setting` part, so that the library says `save_every`
and the command line says `--save-every` (commandline.flag) without the library spelling flags.

Owns: the error types. Must not: print or exit (the CLI's user_errors does).
"""

from __future__ import annotations

from typing import Callable


class DVAEError(Exception):
    """A user-facing error: the CLI prints its message (no traceback) and exits non-zero."""


class Setting(str):
    """A setting's name inside an error message (TrainConfig, method, data or command settings)."""


class SettingError(DVAEError):
    """An error whose message names settings: its parts are text and `Setting`s."""

    def __init__(self, *parts: str):
        self.parts = parts
        super().__init__("".join(parts))

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each setting spelled by `spell` (the CLI: as its flag)."""
        return "".join(spell(part) if isinstance(part, Setting) else part for part in self.parts)
