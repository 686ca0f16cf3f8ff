"""Helpers for context tests: build a directory tree from a compact description."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest


def make_tree(root: Path, spec: dict[str, object]) -> Path:
    """Create files (str/bytes content), directories (None) and symlinks (("->", target))."""
    for rel, value in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if value is None:
            path.mkdir(exist_ok=True)
        elif isinstance(value, tuple) and value[0] == "->":
            os.symlink(value[1], path)
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(str(value))
    return root


def sha(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path):
    root = tmp_path / "ctx"
    root.mkdir()

    def build(spec: dict[str, object]) -> Path:
        return make_tree(root, spec)

    return build
