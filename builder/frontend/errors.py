"""Dockerfile errors: one clear message with a position, the offending line and a caret.

Every failure the frontend reports is a ``DockerfileError``; the CLI prints
``render()`` and exits non-zero. The message format is
``Dockerfile:LINE:COL: what is wrong``, then the source line with a caret
under the column, then ``hint: ...`` where one exists.
"""
from __future__ import annotations

import difflib
import json

from builder.errors import PybuildError

# Control characters (tab aside) shown as escapes: a message quoting hostile text (a flag
# name with a carriage return in it) stays one line, as the CLI promises.
_CONTROL_ESCAPES = {c: json.dumps(chr(c))[1:-1] for c in [*range(32), 127] if c != 9}


def one_line(text: str) -> str:
    return text.translate(_CONTROL_ESCAPES)

KNOWN_INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
)


class DockerfileError(PybuildError):
    """A Dockerfile that cannot be parsed or understood, with its position."""

    def __init__(
        self,
        message: str,
        *,
        line: int = 0,
        col: int = 0,
        end_line: int | None = None,
        filename: str = "Dockerfile",
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col
        self.end_line = end_line if end_line is not None else line
        self.filename = filename
        self.source_line = source_line
        self.hint = one_line(hint) if hint else hint

    @property
    def location(self) -> str:
        if self.line <= 0:
            return self.filename
        if self.col <= 0:
            return f"{self.filename}:{self.line}"
        return f"{self.filename}:{self.line}:{self.col}"

    def __str__(self) -> str:
        return one_line(f"{self.location}: {self.message}")

    def with_source(self, filename: str, lines: list[str]) -> "DockerfileError":
        """Attach the file name and, when the position is known, its source line."""
        self.filename = filename
        if self.source_line is None and 1 <= self.line <= len(lines):
            self.source_line = lines[self.line - 1].rstrip("\r\n")
        return self

    def render(self) -> str:
        out = [f"error: {self}"]
        if self.source_line is not None and self.source_line.strip():
            text = one_line(self.source_line.expandtabs(1))
            if len(text) > 200:
                text = text[:200] + "…"
            out.append(f"  {self.line:>4} | {text}")
            if self.col > 0:
                out.append("       | " + " " * min(self.col - 1, 200) + "^")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


def suggest_instruction(word: str) -> str | None:
    """The known instruction closest to a misspelt one, e.g. RUNN -> RUN."""
    matches = difflib.get_close_matches(word.upper(), KNOWN_INSTRUCTIONS, n=1, cutoff=0.6)
    return matches[0] if matches else None
