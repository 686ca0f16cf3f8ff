"""``pybuild cache ls`` and ``pybuild cache show KEY``: what the build cache holds, step by step.

A record is one step's result (its layers and image config), keyed by the step's cache key. The
listing says which step made it, when, how big its own layer is, whether something else holds
that layer too, and how often it was reused; ``show`` adds the inputs the key was computed from
(kept by the solver in its ``step:`` records) and every layer. ``system df -v`` prints the same
table (``print_cache_table``).
"""
from __future__ import annotations

import argparse
import json
import time

from builder.commands._common import add_root_argument
from builder.errors import PybuildError, UsageError

STEP_WIDTH = 60


def register(sub) -> None:
    cache = sub.add_parser("cache", help="inspect the build cache: ls, show")
    csub = cache.add_subparsers(dest="cache_command", metavar="COMMAND")
    cache.set_defaults(func=lambda args: _no_subcommand())

    p = csub.add_parser("ls", help="list build-cache records, least recently used first")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="id=PREFIX, step=TEXT, op=run|copy|add|workdir|meta, until=DURATION (unused "
                        "that long), since=DURATION (used within), shared=true|false, imported=true|false")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--no-trunc", action="store_true", help="full keys and step texts")
    add_root_argument(p)
    p.set_defaults(func=_ls)

    p = csub.add_parser("show", help="one record: the step, its inputs, layers, size and use")
    p.add_argument("key", help="the cache key or a unique prefix of it")
    p.add_argument("--format", choices=("text", "json"), default="text")
    add_root_argument(p)
    p.set_defaults(func=_show)


def _no_subcommand() -> int:
    raise UsageError("pybuild cache needs a command: ls or show")


# ------------------------------------------------------------------ filters


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise UsageError(f"filter {key}={value!r}: expected true or false")


def entry_filter(filters: list[str]):
    """A predicate on ``CacheEntry`` from ``--filter KEY=VALUE`` options (all must hold)."""
    from builder.commands.system import parse_duration

    now = time.time()
    tests = []
    for item in filters:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise UsageError(f"invalid filter {item!r}: expected KEY=VALUE")
        if key in ("id", "key"):
            hex_part = _hex_prefix(value)
            tests.append(lambda e, h=hex_part: e.key.split(":", 1)[-1].startswith(h))
        elif key in ("step", "description"):
            tests.append(lambda e, v=value.lower(): v in e.description.lower())
        elif key == "op":
            tests.append(lambda e, v=value.lower(): (e.op or "") == v)
        elif key in ("until", "unused-for"):
            tests.append(lambda e, s=parse_duration(value): e.last_used < now - s)
        elif key == "since":
            tests.append(lambda e, s=parse_duration(value): e.last_used >= now - s)
        elif key == "shared":
            tests.append(lambda e, b=_bool(key, value): e.shared == b)
        elif key == "imported":
            tests.append(lambda e, b=_bool(key, value): (e.imported_from is not None) == b)
        else:
            raise UsageError(f"unsupported filter {key!r}: use id, step, op, until, since, shared or imported")
    return lambda entry: all(test(entry) for test in tests)


def _hex_prefix(text: str) -> str:
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[7:]
    if not value or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"{text!r} is not a cache key or key prefix (hex digits, optionally after sha256:)")
    return value


def find_entry(entries, text: str):
    """The one record whose key starts with ``text``; an error when none or several do."""
    prefix = _hex_prefix(text)
    found = [e for e in entries if e.key.split(":", 1)[-1].startswith(prefix)]
    if not found:
        err = PybuildError(f"no build-cache record matches {text!r}")
        err.hint = "list the records with `pybuild cache ls`"
        raise err
    if len(found) > 1:
        shown = ", ".join(e.key[:19] for e in found[:3]) + (", ..." if len(found) > 3 else "")
        err = PybuildError(f"cache key prefix {text!r} is ambiguous: {len(found)} records match ({shown})")
        err.hint = "give more characters of the key"
        raise err
    return found[0]


# ------------------------------------------------------------------ formatting


def ago(t: float) -> str:
    from builder.commands.images import human_age

    return human_age(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def print_cache_table(entries, *, no_trunc: bool = False) -> None:
    """The records as ``docker buildx du --verbose`` shows them, one per row."""
    from builder.commands.images import human_size, print_table, short_id

    rows = [["CACHE ID", "SIZE", "SHARED", "CREATED", "LAST USED", "HITS", "STEP"]]
    for e in entries:
        rows.append([short_id(e.key, no_trunc), human_size(e.size), "true" if e.shared else "false",
                     ago(e.created), ago(e.last_used), str(e.hits),
                     e.description if no_trunc else _short(e.description, STEP_WIDTH)])
    print_table(rows)


def print_mount_table(mounts) -> None:
    from builder.commands.images import human_size, print_table

    rows = [["CACHE MOUNT", "SIZE", "LAST USED"]]
    for m in mounts:
        rows.append([m.ident[:12], human_size(m.size), ago(m.last_used)])
    print_table(rows)


# ------------------------------------------------------------------ commands


def _ls(args: argparse.Namespace) -> int:
    from builder.commands.images import open_store_for
    from builder.store.usage import cache_entries

    keep = entry_filter(args.filter)
    with open_store_for(args) as store:
        entries = [e for e in cache_entries(store) if keep(e)]
    if args.format == "json":
        json.dump([e.to_json() for e in entries], __import__("sys").stdout, indent=2)
        print()
    else:
        print_cache_table(entries, no_trunc=args.no_trunc)
    return 0


def _show(args: argparse.Namespace) -> int:
    from builder.commands.images import open_store_for
    from builder.store.usage import cache_entries, step_inputs

    with open_store_for(args) as store:
        entries = cache_entries(store)
        entry = find_entry(entries, args.key)
        inputs_of = step_inputs(store)
    if args.format == "json":
        doc = entry.to_json()
        doc["parent_step"] = _parent_step(entry, entries, inputs_of)
        print(json.dumps(doc, indent=2))
        return 0
    for line in show_lines(entry, entries, inputs_of):
        print(line)
    return 0


def _parent_step(entry, entries, inputs_of) -> str | None:
    parent = entry.parent
    if not parent:
        return None
    for other in entries:
        if other.key == parent:
            return other.description
    inputs = inputs_of.get(parent, (None, 0))[0]
    if inputs and inputs.get("op") == "from":
        return str(inputs.get("instruction"))
    return None


def show_lines(entry, entries, inputs_of) -> list[str]:
    from builder.commands.images import human_size, short_id

    def fmt_time(t: float) -> str:
        return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))} ({ago(t)})"

    lines = [f"Key:            {entry.key}", f"Step:           {entry.description}"]
    src = entry.step or {}
    if src:
        where = [f"{src.get('dockerfile', 'Dockerfile')}:{src.get('line', '?')}"]
        if src.get("stage"):
            where.append(f"stage {src['stage']}")
        if src.get("context"):
            where.append(f"context {src['context']}")
        lines.append(f"Made by:        {', '.join(where)}")
    if entry.op:
        lines.append(f"Operation:      {entry.op}")
    lines += [f"Created:        {fmt_time(entry.created)}", f"Last used:      {fmt_time(entry.last_used)}",
              f"Hits:           {entry.hits}"]
    if entry.duration_s is not None:
        lines.append(f"Build time:     {entry.duration_s:.2f}s")
    if entry.imported_from:
        lines.append(f"Imported from:  {entry.imported_from}")
    lines.append(f"Size:           {human_size(entry.size)} (its own layer, blob and snapshot); "
                 f"shared: {'yes' if entry.shared else 'no'}; freed if removed alone: "
                 f"{human_size(entry.reclaimable)}")
    if entry.parent:
        parent = _parent_step(entry, entries, inputs_of)
        lines.append(f"Parent:         {entry.parent}" + (f" ({parent})" if parent else ""))
    inputs = entry.inputs
    if inputs is None:
        lines.append("Inputs:         not recorded (this step's position was built with other inputs since)")
    else:
        lines.append("Inputs:")
        lines.append(f"  instruction:  {inputs.get('instruction')}")
        if inputs.get("platform"):
            lines.append(f"  platform:     {inputs['platform']}")
        for title, key in (("build args", "args"), ("environment", "env"), ("also reads", "extra")):
            values = inputs.get(key) or {}
            for i, (k, v) in enumerate(sorted(values.items())):
                lines.append(f"  {(title + ':') if i == 0 else '':<13} {k}={v}")
        if inputs.get("sources"):
            lines.append(f"  sources:      {inputs['sources']}")
        files = inputs.get("files") or {}
        if files:
            lines.append(f"  files:        {len(files)}")
            for path, digest in sorted(files.items())[:50]:
                lines.append(f"    {path}  {digest}")
            if len(files) > 50:
                lines.append(f"    ... and {len(files) - 50} more")
    lines.append(f"Layers:         {len(entry.layers)}")
    for layer in entry.layers:
        mark = "  (this step's)" if layer.own else ""
        lines.append(f"  {short_id(layer.digest)}  diffID {short_id(layer.diff_id)}  "
                     f"{human_size(layer.size):>8}  {layer.where}{mark}")
    return lines
