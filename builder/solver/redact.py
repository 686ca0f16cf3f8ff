"""Masking ``--secret`` values in what RUN steps print.

BuildKit passes a step's output through untouched, so a ``RUN`` that prints a secret puts
it in the terminal, in CI logs and in the build history. pybuild promises more: the output
of every RUN step is masked before it reaches the progress display (tty, plain, json), the
error a failed step raises (its last lines of output) and the build report. What is masked
is each secret value given with ``--secret``, its standard base64 and its lowercase hex
(the encodings a script most often prints), and for a value of several lines each line on
its own, since output is handled line by line. Pieces shorter than ``MIN_PIECE`` bytes are
not masked: masking every ``a`` would make logs unreadable and hides little.

What a step writes into the file system is not output: a RUN that copies a secret into the
image stores it there, as with BuildKit; that is the Dockerfile's choice.
"""
from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

MASK = b"****"
MIN_PIECE = 4


@dataclass(frozen=True)
class Redactor:
    """Replaces every known secret piece in a line of output with ``MASK``."""

    pieces: tuple[bytes, ...] = ()

    @classmethod
    def for_secrets(cls, values: Iterable[bytes]) -> "Redactor":
        found: set[bytes] = set()
        for value in values:
            for form in (value, base64.b64encode(value), value.hex().encode()):
                for piece in form.splitlines():
                    if len(piece) >= MIN_PIECE:
                        found.add(piece)
        # Longest first: a secret that contains another is masked whole.
        return cls(tuple(sorted(found, key=lambda p: (-len(p), p))))

    def __bool__(self) -> bool:
        return bool(self.pieces)

    def __call__(self, line: bytes) -> bytes:
        for piece in self.pieces:
            if piece in line:
                line = line.replace(piece, MASK)
        return line
