"""The CLI imports only the module of the command given; the map must match the modules."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from builder.cli import _command_word, command_modules
from builder.commands import COMMAND_MODULES


def test_command_map_matches_what_modules_register():
    found = {}
    for name in command_modules():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"builder.commands.{name}").register(sub)
        found.update({cmd: name for cmd in sub.choices})
    assert found == COMMAND_MODULES


def test_command_word_skips_global_options():
    assert _command_word(["--root", "/x", "build", "."]) == "build"
    assert _command_word(["--root=/x", "images"]) == "images"
    assert _command_word(["--version"]) is None


def test_path_shorthand_and_help_still_work(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "--root", str(tmp_path / "root"), str(tmp_path),
                           "-q"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("sha256:"), proc.stderr
    out = subprocess.run([sys.executable, "-m", "builder", "--help"], capture_output=True, text=True).stdout
    for cmd in ("build", "images", "run", "pull", "parse", "system"):
        assert cmd in out
