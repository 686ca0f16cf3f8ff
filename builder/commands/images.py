"""``pybuild images``, ``inspect``, ``save``, ``load``, ``tag`` and ``rmi``: the images in the store."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime

from builder.commands._common import add_root_argument, state_root
from builder.errors import UsageError


def register(sub) -> None:
    """The top-level commands (``images``, ``rmi``...) and docker's ``image`` group over the same handlers."""
    for name, helptext, add in _COMMANDS:
        add(sub.add_parser(name, help=helptext))
    group = sub.add_parser("image", help="manage images (docker's `image ls/inspect/rm/...` spellings)")
    group.set_defaults(func=_no_image_command)
    gsub = group.add_subparsers(dest="image_command", metavar="COMMAND")
    for name, helptext, add in _COMMANDS:
        add(gsub.add_parser(_IMAGE_GROUP_NAMES.get(name, name), help=helptext))
    p = gsub.add_parser("prune", help="remove images without a name and the content only they used")
    p.add_argument("-f", "--force", action="store_true", help="accepted for docker compatibility (never prompts)")
    add_root_argument(p)
    p.set_defaults(func=_image_prune)


def _add_images(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", nargs="?", help="only this REPOSITORY[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
    p.add_argument("--digests", action="store_true", help="show image digests")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten IDs")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (default) or json: one JSON object per line")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="dangling=true|false, or reference=PATTERN (shell glob on the short name); repeatable")
    add_root_argument(p)
    p.set_defaults(func=_images)


def _add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] of a multi-platform image (default: the host's)")
    p.add_argument("-f", "--format", help="print a field per image: '{{.Id}}', '{{.Config.Cmd}}', "
                   "'{{json .RootFS}}' (docker's template subset: field paths and json)")
    add_root_argument(p)
    p.set_defaults(func=_inspect)


def _add_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="the archive to write ('-' for standard output)")
    p.add_argument("--format", choices=("oci", "docker"), default="oci",
                   help="oci: OCI image layout (default); docker: `docker load` format")
    p.add_argument("--platform", help="for --format docker: the platform of a multi-platform image")
    add_root_argument(p)
    p.set_defaults(func=_save)


def _add_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="the archive (or OCI layout directory) to read (default: standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    add_root_argument(p)
    p.set_defaults(func=_load)


def _add_tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    add_root_argument(p)
    p.set_defaults(func=_tag)


def _add_rmi(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="remove an image by ID even if several names use it")
    add_root_argument(p)
    p.set_defaults(func=_rmi)


_COMMANDS = [
    ("images", "list the images in the store", _add_images),
    ("inspect", "show an image's details as JSON (like docker image inspect)", _add_inspect),
    ("save", "write images to an OCI-layout or docker-archive tar", _add_save),
    ("load", "load images from an OCI-layout or docker-archive tar (gzip/zstd too)", _add_load),
    ("tag", "give an image another name", _add_tag),
    ("rmi", "remove images and the content nothing else uses", _add_rmi),
]
_IMAGE_GROUP_NAMES = {"images": "ls", "rmi": "rm"}


def _no_image_command(args: argparse.Namespace) -> int:
    raise UsageError("pybuild image needs a command: ls, inspect, save, load, tag, rm or prune")


def _image_prune(args: argparse.Namespace) -> int:
    with open_store_for(args) as store:
        report = store.prune(dangling=True, cache=False)
    if report.images:
        print("Deleted Images:")
        for digest in report.images:
            print(f"deleted: {digest}")
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0


def open_store_for(args: argparse.Namespace):
    from builder.store import ContentStore

    return ContentStore(state_root(args))


# ---------------------------------------------------------------- formatting

def human_size(n: int) -> str:
    """Sizes the way docker prints them: decimal units, three significant digits."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"


def human_age(created: str | None, now: float | None = None) -> str:
    """``3 days ago`` from an RFC 3339 time; ``N/A`` when unknown."""
    if not created:
        return "N/A"
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "N/A"
    seconds = max(0, (now or time.time()) - when)
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
                       ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "Less than a minute ago"


def short_id(digest: str, full: bool = False) -> str:
    return digest if full else digest.split(":", 1)[-1][:12]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


# ---------------------------------------------------------------- commands

def image_filter(filters: list[str]):
    """A predicate on ``ImageSummary`` rows from docker-style ``--filter`` options."""
    import fnmatch

    from builder.store.names import familiar_name

    tests = []
    for text in filters:
        key, sep, value = text.partition("=")
        if not sep:
            raise UsageError(f"bad filter {text!r}: expected KEY=VALUE")
        if key == "dangling":
            if value not in ("true", "false"):
                raise UsageError(f"bad filter {text!r}: dangling is true or false")
            want = value == "true"
            tests.append(lambda s, want=want: (s.name is None) == want)
        elif key == "reference":
            tests.append(lambda s, pattern=value: s.name is not None and (
                fnmatch.fnmatchcase(familiar_name(s.name), pattern)
                or fnmatch.fnmatchcase(familiar_name(s.name).rpartition(":")[0], pattern)))
        else:
            raise UsageError(f"unsupported filter {key!r}: use dangling=true|false or reference=PATTERN")
    return lambda s: all(test(s) for test in tests)


def _images(args: argparse.Namespace) -> int:
    from builder.store.names import parse_reference, split_name

    want_repo = want_tag = None
    if args.repository:
        ref = parse_reference(args.repository, default_tag=False)
        want_repo, want_tag = ref.name, ref.tag
    keep = image_filter(args.filter)
    with open_store_for(args) as store:
        summaries = store.list_images()
    rows = []
    for s in summaries:
        if not keep(s):
            continue
        if s.name is None:
            repo, tag = "<none>", "<none>"
            if want_repo:
                continue
        else:
            ref = parse_reference(s.name)
            if want_repo and (ref.name != want_repo or (want_tag and ref.tag != want_tag)):
                continue
            repo, tag = split_name(s.name)
        rows.append((repo, tag, s))
    if args.quiet:
        seen = []
        for _, _, s in rows:
            ident = short_id(s.id, args.no_trunc)
            if ident not in seen:
                seen.append(ident)
        if seen:
            print("\n".join(seen))
        return 0
    if args.format == "json":
        for repo, tag, s in rows:
            print(json.dumps({"Repository": repo, "Tag": tag, "ID": s.id, "Digest": s.digest,
                              "CreatedAt": s.created, "Size": s.size}, sort_keys=True))
        return 0
    table = [["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]]
    for repo, tag, s in rows:
        table.append([repo, tag] + ([s.digest] if args.digests else [])
                     + [short_id(s.id, args.no_trunc), human_age(s.created), human_size(s.size)])
    print_table(table)
    return 0


def inspect_document(store, image) -> dict:
    """``docker image inspect``'s JSON for one image."""
    from builder.registry.reference import Reference
    from builder.store.names import parse_reference

    names = [parse_reference(n) for n in image.names]
    repo_digests = sorted({Reference(r.registry, r.repository).familiar() + "@" + image.digest for r in names})
    record = store.index.image(image.digest)
    config = image.config
    return {
        "Id": image.id,
        "RepoTags": [r.familiar() for r in names],
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": next((h.comment for h in reversed(config.history) if h.comment), "") if config.history else "",
        "Created": config.created or "",
        "DockerVersion": "",
        "Author": config.author or "",
        "Config": config.config.to_dict(),
        "Architecture": config.architecture,
        **({"Variant": config.variant} if config.variant else {}),
        "Os": config.os,
        "Size": image.size,
        "RootFS": {"Type": config.rootfs.type, "Layers": list(config.diff_ids)},
        "Metadata": {"LastTagTime": datetime.fromtimestamp(record.stored).astimezone().isoformat()
                     if record else ""},
        "Descriptor": {"mediaType": record.media_type if record else image.manifest.media_type,
                       "digest": image.digest, "size": store.blob_size(image.digest)},
        "Manifest": {"mediaType": image.manifest.media_type, "digest": image.manifest_digest},
    }


_ACTION = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")


def render_template(template: str, doc: dict) -> str:
    """Docker's ``--format`` for the common cases: ``{{.Field.Sub}}`` and ``{{json .Field}}``."""
    def value(match: re.Match) -> str:
        node = doc
        for part in filter(None, match.group(2).split(".")):
            if not isinstance(node, dict) or part not in node:
                raise UsageError(f"template {match.group(0)!r}: no field {part!r}")
            node = node[part]
        if match.group(1):
            return json.dumps(node, separators=(",", ":"))
        if isinstance(node, list):
            return "[" + " ".join(str(v) for v in node) + "]"  # Go prints slices like this
        if isinstance(node, dict):
            return "map[" + " ".join(f"{k}:{v}" for k, v in node.items()) + "]"
        return str(node)

    rest = _ACTION.sub("", template)
    if "{{" in rest or "}}" in rest:
        raise UsageError(f"unsupported template {template!r}: "
                         "only {{.Field}} and {{json .Field}} are understood")
    return _ACTION.sub(value, template)


def _inspect(args: argparse.Namespace) -> int:
    from builder.image.oci import Platform
    from builder.store import ImageNotFoundError

    platform = Platform.parse(args.platform) if args.platform else None
    docs, missing = [], []
    with open_store_for(args) as store:
        for text in args.images:
            try:
                docs.append(inspect_document(store, store.get_image(text, platform)))
            except ImageNotFoundError:
                missing.append(text)
    if args.format:
        for doc in docs:
            print(render_template(args.format, doc))
    else:
        print(json.dumps(docs, indent=4))
    if missing:
        raise ImageNotFoundError(f"no such image: {', '.join(missing)}")
    return 0


def _save(args: argparse.Namespace) -> int:
    from builder.exporter import save_to_path
    from builder.image.oci import Platform

    output = args.output
    if output is None:
        if sys.stdout.isatty():
            raise UsageError("refusing to write an archive to a terminal; give -o FILE (or -o - to insist)")
        output = "-"
    platform = Platform.parse(args.platform) if args.platform else None
    with open_store_for(args) as store:
        save_to_path(store, args.images, output, args.format, platform)
    return 0


def _load(args: argparse.Namespace) -> int:
    from builder.exporter import load_archive
    from builder.store.names import familiar_name

    source = args.input
    if source is None:
        if sys.stdin.isatty():
            raise UsageError("no archive given: use -i FILE or pipe an archive to standard input")
        source = sys.stdin.buffer
    with open_store_for(args) as store:
        loaded = load_archive(store, source)
        if not args.quiet:
            for image in loaded:
                for name, old in image.replaced:
                    record = store.index.image(old)
                    old_id = record.config_digest if record and record.config_digest else old
                    print(f"The image {familiar_name(name)} already exists, renaming the old one with ID "
                          f"{old_id} to empty string")
    if not args.quiet:
        for image in loaded:
            if image.names:
                for name in image.names:
                    print(f"Loaded image: {familiar_name(name)}")
            else:
                print(f"Loaded image ID: {image.id or image.digest}")
    return 0


def _tag(args: argparse.Namespace) -> int:
    with open_store_for(args) as store:
        store.tag(args.source, args.target)
    return 0


def _rmi(args: argparse.Namespace) -> int:
    from builder.store import StoreError
    from builder.store.names import InvalidReferenceError, familiar_name

    failed = []
    with open_store_for(args) as store:
        for text in args.images:
            try:
                untagged, deleted = store.remove_image(text, force=args.force)
            except (StoreError, InvalidReferenceError) as exc:
                print(exc.render(), file=sys.stderr)
                failed.append(text)
                continue
            for name in untagged:
                print(f"Untagged: {familiar_name(name)}")
            for digest in deleted:
                print(f"Deleted: {digest}")
    if failed:
        return 1
    return 0
