"""Errors a user can act on.

Every problem with user input becomes an :class:`InputError` whose message names the file
(or column, or value) at fault and says how to fix it. The CLI prints the message without a
traceback; the app shows it in the page.
"""

from __future__ import annotations

from dataclasses import dataclass


class InputError(ValueError):
    """Bad user input: the message names what is wrong and the fix."""


class UnavailableError(RuntimeError):
    """A model, encoder or weights file that is not on this machine (message says how to provide it)."""


@dataclass(frozen=True)
class BadFile:
    """One input file that was skipped, and why (kept so nothing is dropped silently)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
