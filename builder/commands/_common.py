"""Options shared by several subcommands."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_root_argument(parser: argparse.ArgumentParser) -> None:
    """``--root DIR`` on a subcommand; it also works before the subcommand."""
    parser.add_argument(
        "--root", default=argparse.SUPPRESS, help="state directory (see `pybuild --help`)"
    )


def state_root(args: argparse.Namespace) -> Path:
    """The state directory: --root, $PYBUILD_ROOT, /var/lib/pybuild (root) or XDG."""
    root = getattr(args, "root", None) or os.environ.get("PYBUILD_ROOT")
    if root:
        return Path(root)
    if os.geteuid() == 0:
        return Path("/var/lib/pybuild")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "pybuild"
