"""``pybuild parse``: show what the frontend understood of a Dockerfile.

``--format json`` prints the typed instructions (schema ``pybuild.frontend/v1``,
documented in docs/frontend-json.md); ``--format dump`` prints the raw parse
tree in exactly BuildKit's parser dump format.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from builder.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parse", help="parse a Dockerfile and print what the frontend understood")
    p.add_argument("path", nargs="?", default=None,
                   help="build context (the Dockerfile is PATH/Dockerfile unless -f is given)")
    p.add_argument("-f", "--file", default=None, help="the Dockerfile ('-' for standard input)")
    p.add_argument("--format", choices=("json", "dump"), default="json")
    p.add_argument("--build-arg", action="append", default=[], metavar="K[=V]",
                   help="expand ARG/ENV with these build args and include the expanded instructions")
    p.add_argument("--target", default=None, help="with --build-arg: expand only up to this stage")
    p.set_defaults(func=run)


def _read(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.file == "-":
        return sys.stdin.buffer.read(), "Dockerfile"
    if args.file:
        path = Path(args.file)
    else:
        path = Path(args.path or ".") / "Dockerfile"
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", ) from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory (give the Dockerfile with -f)") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def _build_args(pairs: list[str]) -> dict[str, str]:
    from builder.commands.build import parse_kv_list

    return parse_kv_list(pairs, "--build-arg", env_fallback=True)


def run(args: argparse.Namespace) -> int:
    from builder.frontend import parse, parse_dockerfile
    from builder.frontend.dump import dump

    data, name = _read(args)
    if args.format == "dump":
        sys.stdout.write(dump(parse_dockerfile(data, name).ast))
        return 0
    dockerfile = parse(data, name)
    out = dockerfile.to_json()
    if args.build_arg or args.target:
        out["expanded"] = _expanded(dockerfile, _build_args(args.build_arg), args.target)
    for warning in dockerfile.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    # Invalid UTF-8 in the Dockerfile is carried as surrogate escapes; in JSON it becomes
    # U+FFFD, as Go's encoder writes it (raw bytes would not be UTF-8, hence not JSON).
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode())
    return 0


def _expanded(dockerfile, build_args: dict[str, str], target: str | None) -> dict:
    """Each stage's instructions after ARG/ENV expansion (base image env assumed empty)."""
    from builder.frontend.stages import ExpansionScope, expand_from, resolve_meta_args, unused_build_args

    meta = resolve_meta_args(dockerfile, build_args)
    last = dockerfile.stage(target).index if target else len(dockerfile.stages) - 1
    stages = []
    used = set(meta)
    for stage in dockerfile.stages[: last + 1]:
        scope = ExpansionScope(escape=dockerfile.escape, build_args=build_args, meta_values=meta,
                               filename=dockerfile.filename)
        base = expand_from(dockerfile, stage, meta)
        instrs = [scope.expand(i).to_json() for i in stage.instructions]
        used |= scope.used_args
        stages.append({"index": stage.index, "name": stage.name, "from": base.to_json(),
                       "instructions": instrs, "env": scope.env})
    return {"meta_args": meta, "stages": stages,
            "unused_build_args": unused_build_args(build_args, used)}
