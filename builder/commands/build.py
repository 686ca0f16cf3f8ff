"""``pybuild build`` (and ``pybuild PATH``): build a Dockerfile into an image; ``pybuild report``.

Flags mean what they mean to ``docker buildx build``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from builder.commands._common import add_root_argument, state_root
from builder.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("path", nargs="?", default=".", help="build context directory ('-' for a tar on stdin)")
    p.add_argument("-f", "--file", default=None, help="the Dockerfile (default PATH/Dockerfile)")
    p.add_argument("-t", "--tag", action="append", default=[], help="name:tag for the image (repeatable)")
    p.add_argument("--target", default=None, help="build this stage")
    p.add_argument("--build-arg", action="append", default=[], metavar="K[=V]")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE|env=VAR")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID=SOCKET")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE")
    p.add_argument("--pull", action="store_true", help="always look for a newer base image")
    p.add_argument("--platform", default=None, help="target platform (default: the host's)")
    p.add_argument("--network", default="default", choices=("default", "host", "none"))
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("-o", "--output", action="append", default=[], metavar="type=...,dest=...")
    p.add_argument("--push", action="store_true", help="push the image to the registry of each -t name")
    p.add_argument("--cache-from", action="append", default=[], metavar="type=registry,ref=REF|type=local,src=DIR",
                   help="reuse build cache exported by another build (repeatable; a bare REF means type=registry)")
    p.add_argument("--cache-to", action="append", default=[],
                   metavar="type=registry,ref=REF|type=local,dest=DIR|type=inline[,mode=min|max]",
                   help="export this build's cache (mode=min: the final image's steps, max: every stage's)")
    p.add_argument("--iidfile", default=None)
    p.add_argument("--metadata-file", default=None)
    p.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "json", "quiet"))
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--report", default=None, metavar="FILE", help="write the build report as JSON")
    p.add_argument("--jobs", type=int, default=None, help="steps to run at once (default: CPU count)")
    add_root_argument(p)
    p.set_defaults(func=run_build)

    r = sub.add_parser("report", help="show a build report (the last build's by default)")
    r.add_argument("which", nargs="*", default=["last"], help="'last', a report FILE, or 'diff A B'")
    r.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    add_root_argument(r)
    r.set_defaults(func=run_report)


def parse_kv_list(values: list[str], what: str, *, env_fallback: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        if eq:
            out[key] = value
        elif env_fallback:
            if key in os.environ:  # docker: a bare KEY takes its value from the environment
                out[key] = os.environ[key]
        else:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
    return out


def _dockerfile_path(args: argparse.Namespace) -> Path | None:
    """The Dockerfile; None means "Dockerfile" inside a context tar read from stdin."""
    if args.file == "-":
        raise UsageError("a Dockerfile on stdin is not supported; give it with -f FILE")
    if args.path == "-":
        return Path(args.file) if args.file else None
    if args.file:
        return Path(args.file)
    return Path(args.path) / "Dockerfile"


def run_build(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    warmup = _start_context_warmup(args)
    try:
        return _run_build(args, warmup)
    finally:
        if warmup is not None:
            warmup.close()


def _start_context_warmup(args: argparse.Namespace):
    """Start hashing a local context in a helper process before the heavy imports below, so a
    fresh checkout's files are hashed on the other core meanwhile (builder.context.warmup)."""
    if args.path == "-" or args.file == "-":
        return None
    from builder.context.warmup import start_warmup

    return start_warmup(args.path, _dockerfile_path(args), args.target,
                        state_root(args) / "cache" / "context")


def _run_build(args: argparse.Namespace, warmup) -> int:
    from builder.build import BuildOptions, run

    options = BuildOptions(
        context=args.path,
        dockerfile=_dockerfile_path(args),
        tags=args.tag,
        target=args.target,
        build_args=parse_kv_list(args.build_arg, "--build-arg", env_fallback=True),
        secrets=args.secret,
        ssh=args.ssh,
        no_cache=args.no_cache,
        no_cache_filter=set(args.no_cache_filter),
        pull=args.pull,
        platform=args.platform,
        network=args.network,
        labels=parse_kv_list(args.label, "--label"),
        outputs=args.output + (["type=registry"] if args.push else []),
        iidfile=args.iidfile,
        metadata_file=args.metadata_file,
        progress="quiet" if args.quiet else args.progress,
        report_file=args.report,
        jobs=args.jobs or os.cpu_count() or 1,
        root=state_root(args),
        cache_from=args.cache_from,
        cache_to=args.cache_to,
        context_warmup=warmup,
    )
    image_id = run(options)
    if options.progress == "quiet":
        print(image_id)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from builder.solver.report import BuildReport

    which = args.which
    if which and which[0] == "diff":
        if len(which) != 3:
            raise UsageError("usage: pybuild report diff A.json B.json")
        return _report_diff(args, which[1], which[2])
    if len(which) != 1:
        raise UsageError("usage: pybuild report [last|FILE]")
    path = state_root(args) / "reports" / "last.json" if which[0] == "last" else Path(which[0])
    if not path.is_file():
        raise UsageError(f"no report at {path}" + (" (no build has run with this --root yet)"
                                                   if which[0] == "last" else ""))
    try:
        report = BuildReport.load(path)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{path} is not a pybuild report: {exc}") from None
    if args.format == "json":
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    elif args.format == "markdown":
        sys.stdout.write(report.markdown())
    else:
        _print_table(report)
    return 0


def _print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.dockerfile}: {report.cached}/{len(report.steps)} cached, "
                        f"{report.duration_s:.2f}s", show_lines=False)
    for col in ("line", "stage", "instruction", "status", "time", "why it ran"):
        table.add_column(col, overflow="fold")
    for s in report.steps:
        why = s.miss_reason.message if s.miss_reason and s.status != "CACHED" else ""
        table.add_row(str(s.line), s.stage, s.instruction, s.status, f"{s.duration_s:.2f}s", why)
    Console(width=max(100, Console().width)).print(table)


def _report_diff(args: argparse.Namespace, name_a: str, name_b: str) -> int:
    """``pybuild report diff A B``: each step that went from CACHED to DONE and why, steps added
    and removed, and time changes (``builder.solver.report.diff_reports``)."""
    from builder.solver.report import diff_reports

    diff = diff_reports(_diff_side(args, name_a), _diff_side(args, name_b))
    if args.format == "json":
        json.dump(diff.to_json(), sys.stdout, indent=2, ensure_ascii=False)
        print()
    elif args.format == "markdown":
        sys.stdout.write(diff.markdown(name_a, name_b))
    else:
        print("\n".join(diff.text_lines(name_a, name_b)))
    return 0


def _diff_side(args: argparse.Namespace, which: str):
    """A report file for ``report diff`` ('last' is the store's last build)."""
    from builder.errors import PybuildError
    from builder.solver.report import BuildReport

    path = state_root(args) / "reports" / "last.json" if which == "last" else Path(which)
    if not path.is_file():
        raise UsageError(f"no report at {path}")
    try:
        return BuildReport.load(path)
    except PybuildError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a pybuild report: {exc}") from None
