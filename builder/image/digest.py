"""Content digests: ``sha256:<64 lowercase hex>``, computed in one shot or incrementally."""
from __future__ import annotations

import hashlib
import re

from builder.image.errors import InvalidDigestError

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_ANY = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(text: object) -> str:
    """Return ``text`` if it is a valid sha256 digest; raise ``InvalidDigestError`` otherwise."""
    if not isinstance(text, str):
        raise InvalidDigestError(f"invalid digest {text!r}: not a string")
    if _SHA256.fullmatch(text):
        return text
    if _ANY.fullmatch(text):
        algo = text.split(":", 1)[0]
        if algo != "sha256":
            raise InvalidDigestError(f"unsupported digest algorithm {algo!r} in {text!r}: only sha256 is supported")
    raise InvalidDigestError(f"invalid digest {text!r}: expected sha256:<64 lowercase hex digits>")


def digest_hex(digest: str) -> str:
    """The hex part of a valid digest (the file name blobs are stored under)."""
    return parse_digest(digest).split(":", 1)[1]


class DigestWriter:
    """A write-only sink that counts and hashes what passes through to ``target`` (if any)."""

    def __init__(self, target=None) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        n = len(data)
        self.size += n
        if self._target is not None:
            self._target.write(data)
        return n

    def flush(self) -> None:
        if self._target is not None and hasattr(self._target, "flush"):
            self._target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
