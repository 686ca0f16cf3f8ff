"""Masking ``--secret`` values in what RUN steps print.

BuildKit passes a step's output through untouched, so a ``RUN`` that prints a secret puts
it in the terminal, in CI logs and in the build history. pybuild promises more: the output
of every RUN step is masked before it reaches the progress display (tty, plain, json), the
error a failed step raises (its last lines of output) and the build report. What is masked
is each secret value given with ``--secret`` (for a value of several lines, each line on its
own, since output is handled line by line), and its standard base64 and lowercase hex (the
encodings a script most often prints), also when a tool wraps them over several lines
(``base64``, ``xxd -p``): any run of at least ``MIN_ENCODED`` base64 or hex characters that
is part of one of them is masked. Pieces shorter than ``MIN_PIECE`` bytes are not masked:
masking every ``a`` would make logs unreadable and hides little.

What a step writes into the file system is not output: a RUN that copies a secret into the
image stores it there, as with BuildKit; that is the Dockerfile's choice.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

MASK = b"****"
MIN_PIECE = 4
MIN_ENCODED = 16
# A run of base64 (hex is a subset) characters long enough to be part of an encoded secret.
_ENCODED_RUN = re.compile(rb"[A-Za-z0-9+/=]{%d,}" % MIN_ENCODED)


@dataclass(frozen=True)
class Redactor:
    """Replaces every known secret piece in a line of output with ``MASK``."""

    pieces: tuple[bytes, ...] = ()
    encoded: tuple[bytes, ...] = ()  # whole base64 and hex forms: a wrapped line is part of one

    @classmethod
    def for_secrets(cls, values: Iterable[bytes]) -> "Redactor":
        found: set[bytes] = set()
        encoded: set[bytes] = set()
        for value in values:
            for piece in value.splitlines():
                if len(piece) >= MIN_PIECE:
                    found.add(piece)
            for form in (base64.b64encode(value), value.hex().encode()):
                if len(form) >= MIN_PIECE:
                    found.add(form)
                    encoded.add(form)
        # Longest first: a secret that contains another is masked whole.
        return cls(tuple(sorted(found, key=lambda p: (-len(p), p))), tuple(encoded))

    def __bool__(self) -> bool:
        return bool(self.pieces)

    def __call__(self, line: bytes) -> bytes:
        for piece in self.pieces:
            if piece in line:
                line = line.replace(piece, MASK)
        if self.encoded and _ENCODED_RUN.search(line):
            line = _ENCODED_RUN.sub(self._mask_encoded, line)
        return line

    def _mask_encoded(self, match: re.Match[bytes]) -> bytes:
        run = match.group()
        # The run may carry neighbours (a wrapped line ends at any character): trim '=' padding.
        core = run.rstrip(b"=")
        if len(core) >= MIN_ENCODED and any(core in form for form in self.encoded):
            return MASK
        return run
