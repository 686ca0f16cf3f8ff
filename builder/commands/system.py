"""``pybuild system df`` and ``pybuild system prune``: what the store holds, and reclaiming it."""
from __future__ import annotations

import argparse

from builder.commands._common import add_root_argument
from builder.errors import UsageError
from builder.commands.images import human_size, open_store_for, print_table


def register(sub) -> None:
    system = sub.add_parser("system", help="manage the store: disk usage, pruning")
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND")
    system.set_defaults(func=lambda args: _no_subcommand(system))

    p = ssub.add_parser("df", help="show what the store holds and what could be reclaimed")
    p.add_argument("-v", "--verbose", action="store_true", help="list every image and snapshot")
    add_root_argument(p)
    p.set_defaults(func=_df)

    p = ssub.add_parser("prune", help="remove unnamed images and content nothing references")
    p.add_argument("-a", "--all", action="store_true", help="also remove the build cache")
    p.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                   help="with -a: only build cache unused for DURATION (e.g. 36h, 7d, 90m)")
    p.add_argument("-f", "--force", action="store_true", help="accepted for docker compatibility (never prompts)")
    add_root_argument(p)
    p.set_defaults(func=_prune)

    p = ssub.add_parser("check", help="verify the store: blob digests, references, index rows, snapshots, temp files")
    p.add_argument("--repair", action="store_true", help="fix what is safely fixable, then check again")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_root_argument(p)
    p.set_defaults(func=_check)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    raise UsageError("pybuild system needs a command: df or prune")


def _df(args: argparse.Namespace) -> int:
    with open_store_for(args) as store:
        usage = store.disk_usage()
        table = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]]
        for row in usage.rows():
            pct = f" ({100 * row.reclaimable // row.size}%)" if row.size else ""
            table.append([row.kind, str(row.total), str(row.active), human_size(row.size),
                          human_size(row.reclaimable) + pct])
        print_table(table)
        if args.verbose:
            print()
            images = [["IMAGE", "ID", "SIZE"]]
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
    return 0


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``36h`` or ``7d`` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    try:
        value = float(number)
    except ValueError:
        value = -1
    if unit not in units or value < 0:
        raise UsageError(f"bad duration {text!r}: expected a number and s, m, h or d (e.g. 36h)")
    return value * units[unit]


def _prune(args: argparse.Namespace) -> int:
    unused_for = None
    for item in args.filter:
        key, _, value = item.partition("=")
        if key != "until":
            raise UsageError(f"unsupported filter {item!r}: only until=DURATION")
        unused_for = parse_duration(value)
    if unused_for is not None and not args.all:
        raise UsageError("--filter until=... selects build cache to remove; add -a")
    with open_store_for(args) as store:
        report = store.prune(cache=args.all, cache_unused_for=unused_for)
    for digest in report.images:
        print(f"Deleted image: {digest}")
    for digest in report.blobs:
        print(f"Deleted blob: {digest}")
    for diff_id in report.snapshots:
        print(f"Deleted snapshot: {diff_id}")
    if report.cache_entries:
        print(f"Deleted build cache entries: {report.cache_entries}")
    for diff_id in report.skipped_in_use:
        print(f"Kept snapshot in use: {diff_id}")
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
