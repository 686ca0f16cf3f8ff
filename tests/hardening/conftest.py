"""Shared helpers for the hardening suite: run ``pybuild`` as a real subprocess, check a store.

Kept small on purpose: every test file in this folder may use these, none needs more.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.store.conftest import busybox_archive  # noqa: F401  (session fixture)

# Timeout for one CLI call: generous, a hung pybuild fails the test instead of the suite.
CLI_TIMEOUT = 120


def pybuild_cmd(*args: str | os.PathLike) -> list[str]:
    """The argv of ``pybuild ARGS`` run with this interpreter (no reliance on $PATH)."""
    return [sys.executable, "-m", "builder", *map(str, args)]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SOURCE_DATE_EPOCH", "0")
    env.update(extra)
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_pybuild(*args: str | os.PathLike, root: str | os.PathLike | None = None, check: bool = False,
                timeout: float = CLI_TIMEOUT, env: dict[str, str] | None = None,
                input: str | None = None) -> CliResult:
    """Run ``pybuild ARGS`` (``--root ROOT`` first when given) and capture its output."""
    argv = pybuild_cmd(*(["--root", root] if root is not None else []), *args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), input=input)
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return result


def assert_store_clean(root: str | os.PathLike) -> None:
    """``pybuild system check`` (a real subprocess) finds nothing wrong with the store at ``root``."""
    result = run_pybuild("system", "check", root=root)
    assert result.returncode == 0, f"system check found problems:\n{result.stdout}{result.stderr}"


@pytest.fixture
def loaded_root(tmp_path, busybox_archive) -> Path:  # noqa: F811
    """A store root that already holds busybox:latest (loaded through the CLI)."""
    root = tmp_path / "root"
    run_pybuild("load", "-i", busybox_archive, root=root, check=True)
    return root
