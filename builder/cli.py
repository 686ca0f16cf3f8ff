"""The ``pybuild`` command line: argument parsing, exit codes, wiring.

Subcommands live in ``builder.commands``: each module there defines
``register(subparsers)`` which adds its parsers and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning an exit status).
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from builder import __version__
from builder.errors import PybuildError


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that command module's subcommands (faster)."""
    parser = argparse.ArgumentParser(
        prog="pybuild", description="Build OCI images from Dockerfiles."
    )
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    parser.add_argument(
        "--root",
        default=None,
        help="state directory (default $PYBUILD_ROOT, /var/lib/pybuild for root, "
        "else $XDG_DATA_HOME/pybuild)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else command_modules():
        module = importlib.import_module(f"builder.commands.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def command_modules() -> list[str]:
    import builder.commands as commands

    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__)
                  if not info.name.startswith("_"))


def _command_word(argv: list[str]) -> str | None:
    """The subcommand word in ``argv`` (after global options), if any."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--root":
            i += 2
            continue
        if word.startswith("--root="):
            i += 1
            continue
        return None if word.startswith("-") else word
    return None


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    from builder.commands import COMMAND_MODULES

    argv = list(sys.argv[1:] if argv is None else argv)
    word = _command_word(argv)
    if word is not None and word not in COMMAND_MODULES:
        # `pybuild PATH` is shorthand for `pybuild build PATH`.
        argv.insert(argv.index(word), "build")
        word = "build"
    parser = build_parser(COMMAND_MODULES.get(word) if word else None)
    args = parser.parse_args(argv)
    # SIGTERM (a cancelled CI job) stops like Ctrl-C: running steps are killed, finished ones kept.
    import signal

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    if threading_main():
        signal.signal(signal.SIGTERM, _terminate)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except PybuildError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as exc:  # a bug: say so in one line unless asked for details
        if os.environ.get("PYBUILD_DEBUG"):
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: this is a bug in pybuild; rerun with PYBUILD_DEBUG=1 for a traceback",
              file=sys.stderr)
        return 70


def console_main() -> None:
    """The ``pybuild`` program: ``main``, then an exit that skips the interpreter's teardown.

    Freeing every object of a build one by one takes ~50 ms that nobody waits for on
    purpose. Everything a normal exit does that matters still happens first: non-daemon
    threads are joined (``threading._shutdown``, which also stops thread pools), atexit
    handlers run and the standard streams are flushed.
    """
    status = main()
    try:
        import threading

        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BrokenPipeError:
                status = status or 141
            except (OSError, ValueError):
                pass
    except BaseException:  # anything odd: leave it to the normal exit
        raise SystemExit(status)
    os._exit(status)


if __name__ == "__main__":
    console_main()
