"""Exporter fixtures: the store fixtures, and the real tools (skopeo, umoci) to check against."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.store.conftest import busybox_archive, busybox_image, store, tree_of  # noqa: F401 (fixtures)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run .ci/install (apt-get install {name})")
    return path


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout
