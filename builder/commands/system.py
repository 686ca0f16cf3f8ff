"""``pybuild system df`` and ``pybuild system prune``: what the store holds, and reclaiming it.

``prune`` follows ``docker buildx prune``: ``-a`` drops all build cache, ``--filter until=24h`` the
cache unused for longer than that, ``--keep-storage 10GB`` least recently used cache until the
store fits; unnamed images and content nothing references always go (``builder.store.gc``).
"""
from __future__ import annotations

import argparse

from builder.commands._common import add_root_argument
from builder.errors import PybuildError, UsageError
from builder.commands.images import human_size, open_store_for, print_table


def register(sub) -> None:
    system = sub.add_parser("system", help="manage the store: disk usage, pruning, consistency check")
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND")
    system.set_defaults(func=lambda args: _no_subcommand(system))

    p = ssub.add_parser("df", help="show what the store holds and what could be reclaimed")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every image, snapshot, build-cache record and cache mount")
    add_root_argument(p)
    p.set_defaults(func=_df)

    p = ssub.add_parser("prune", help="remove unnamed images, build cache and content nothing references")
    p.add_argument("-a", "--all", action="store_true", help="remove all build cache (records and cache mounts)")
    p.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                   help="remove build cache unused for longer than DURATION (e.g. 24h, 7d, 1h30m)")
    p.add_argument("--keep-storage", default=None, metavar="SIZE",
                   help="remove least recently used build cache until the store is under SIZE (e.g. 10GB)")
    p.add_argument("-f", "--force", action="store_true", help="accepted for docker compatibility (never prompts)")
    add_root_argument(p)
    p.set_defaults(func=_prune)

    p = ssub.add_parser("check", help="verify the store: blob digests, references, index rows, snapshots, temp files")
    p.add_argument("--repair", action="store_true", help="fix what is safely fixable, then check again")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_root_argument(p)
    p.set_defaults(func=_check)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    raise UsageError("pybuild system needs a command: df, prune or check")


def _df(args: argparse.Namespace) -> int:
    with open_store_for(args) as store:
        usage = store.disk_usage() if not args.verbose else _verbose_usage(store)
        table = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]]
        for row in usage.rows():
            pct = f" ({100 * row.reclaimable // row.size}%)" if row.size else ""
            table.append([row.kind, str(row.total), str(row.active), human_size(row.size),
                          human_size(row.reclaimable) + pct])
        print_table(table)
        if args.verbose:
            print()
            images = [["IMAGE", "ID", "SIZE"]]
            from builder.commands.cache import print_cache_table, print_mount_table
            from builder.commands.images import short_id
            from builder.store.names import familiar_name

            for s in store.list_images():
                images.append([familiar_name(s.name) if s.name else "<none>", short_id(s.id), human_size(s.size)])
            print_table(images)
            print()
            snaps = [["SNAPSHOT (diffID)", "SIZE"]]
            for diff_id, size, _, _ in store.index.snapshots():
                snaps.append([short_id(diff_id), human_size(size)])
            print_table(snaps)
            print()
            print_cache_table(usage.entries)
            if usage.mounts:
                print()
                print_mount_table(usage.mounts)
            print()
            for line in _gc_lines(store.root, usage.total):
                print(line)
    return 0


def _verbose_usage(store):
    from builder.store.usage import disk_usage

    return disk_usage(store, verbose=True)


def _gc_lines(root, total: int) -> list[str]:
    """The store's size against the automatic GC's limit, and what the last GC did."""
    from builder.commands.cache import ago
    from builder.store.gc import gc_policy, last_gc

    try:
        policy = gc_policy(root)
        limit = "off" if policy.keep_storage is None else human_size(policy.keep_storage)
        lines = [f"Store size: {human_size(total)}; automatic GC keeps it under {limit} ({policy.source})"]
    except PybuildError as exc:
        lines = [f"Store size: {human_size(total)}; automatic GC is skipped: {exc}"]
    last = last_gc(root)
    if last and last.get("outcome") == "collected":
        lines.append(f"Last automatic GC: {ago(last['time'])}, {human_size(last['size_before'])} -> "
                     f"{human_size(last['size_after'])} ({last.get('cache_records', 0)} cache records, "
                     f"{last.get('images', 0)} unnamed images, {last.get('cache_mounts', 0)} cache mounts removed)")
    elif last:
        lines.append(f"Last automatic GC: {ago(last['time'])}, skipped: the store was in use")
    return lines


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``36h``, ``7d`` or a sum like ``1h30m``, in seconds."""
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"bad duration {text!r}: expected a number and s, m, h or d (e.g. 36h)")
    return sum(float(n) * units[u] for n, u in parts)


def _prune(args: argparse.Namespace) -> int:
    from builder.store.gc import parse_size

    unused_for = None
    for item in args.filter:
        key, _, value = item.partition("=")
        if key not in ("until", "unused-for"):
            raise UsageError(f"unsupported filter {item!r}: only until=DURATION")
        unused_for = parse_duration(value)
    keep = None if args.keep_storage is None else parse_size(args.keep_storage, "--keep-storage")
    cache = args.all or unused_for is not None or keep is not None
    with open_store_for(args) as store:
        report = store.prune(cache=cache, cache_unused_for=unused_for, keep_storage=keep)
    for digest in report.images:
        print(f"Deleted image: {digest}")
    for digest in report.blobs:
        print(f"Deleted blob: {digest}")
    for diff_id in report.snapshots:
        print(f"Deleted snapshot: {diff_id}")
    if report.cache_entries:
        print(f"Deleted build cache entries: {report.cache_entries}")
    for ident in report.cache_mounts:
        print(f"Deleted cache mount: {ident[:12]}")
    for diff_id in report.skipped_in_use:
        print(f"Kept snapshot in use: {diff_id}")
    if keep is not None:
        print(f"Store size: {human_size(report.size_after)} (kept under {human_size(keep)} where "
              "named images allow)")
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """One line per problem (exit 1), or a summary when the store is consistent (exit 0)."""
    from builder.store.check import check_store, report_json

    with open_store_for(args) as store:
        report = check_store(store, repair=args.repair)
    if args.json:
        print(report_json(report))
        return 0 if report.ok else 1
    for problem in report.problems:
        print(problem.line())
    for line in report.repaired:
        print(f"repaired: {line}")
    for problem in report.remaining or []:
        print(f"still: {problem.line()}")
    if report.ok:
        state = "consistent after repair" if report.problems else "consistent"
        print(f"store {report.root} is {state}: {report.summary()}")
    return 0 if report.ok else 1
