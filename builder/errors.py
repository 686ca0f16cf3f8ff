"""The project's own error types: every user-facing failure is one of these.

The CLI turns a ``PybuildError`` into one clear message and a non-zero exit
status; anything else escaping is a bug.
"""
from __future__ import annotations


class PybuildError(Exception):
    """Base class: a failure to report to the user without a traceback."""

    exit_code = 1
    hint: str | None = None

    def render(self) -> str:
        msg = f"error: {self}"
        if self.hint:
            msg += f"\nhint: {self.hint}"
        return msg


class UsageError(PybuildError):
    """Bad command-line usage."""

    exit_code = 2
