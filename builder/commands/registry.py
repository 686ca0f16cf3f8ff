"""``pybuild pull``, ``push``, ``login`` and ``logout``: talking to OCI registries."""
from __future__ import annotations

import argparse
import sys

from builder.commands._common import add_root_argument, state_root


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain http (and unverified TLS) for this registry; repeatable "
                   "(loopback registries are always allowed)")
    p.add_argument("--ca-cert", metavar="PEM", help="trust this CA bundle for registry TLS")


def register(sub) -> None:
    p = sub.add_parser("pull", help="download an image from a registry into the store")
    p.add_argument("image", help="image reference, e.g. busybox:1.36 or localhost:5000/team/app@sha256:...")
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] to pick from a multi-platform image (default: the host's)")
    p.add_argument("--all-platforms", action="store_true",
                   help="pull every platform of a multi-platform image (to push it on whole)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")
    _add_connection_options(p)
    add_root_argument(p)
    p.set_defaults(func=_pull)

    p = sub.add_parser("push", help="upload an image from the store to a registry")
    p.add_argument("image", help="image reference in the store, e.g. localhost:5000/team/app:1.0")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the pushed digest")
    _add_connection_options(p)
    add_root_argument(p)
    p.set_defaults(func=_push)

    p = sub.add_parser("login", help="store credentials for a registry (docker config.json format)")
    p.add_argument("registry", nargs="?", default="docker.io", help="registry host[:port] (default docker.io)")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="the password (prefer --password-stdin: argv is visible to other users)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _add_connection_options(p)
    p.set_defaults(func=_login)

    p = sub.add_parser("logout", help="remove stored credentials for a registry")
    p.add_argument("registry", nargs="?", default="docker.io")
    p.set_defaults(func=_logout)


def registry_options(args: argparse.Namespace):
    """RegistryOptions from the command line plus ``<root>/registries.json`` (if present)."""
    from builder.registry.config import load_registry_options

    return load_registry_options(
        state_root(args),
        insecure=getattr(args, "insecure_registry", []) or [],
        ca_cert=getattr(args, "ca_cert", None),
    )


def _pull(args: argparse.Namespace) -> int:
    from builder.registry.api import pull_to_store
    from builder.store.store import open_store

    with open_store(state_root(args)) as store:
        image = pull_to_store(args.image, store, platform=args.platform, options=registry_options(args),
                              progress=None if args.quiet else _say, all_platforms=args.all_platforms)
    if args.quiet:
        print(image.digest)
    else:
        print(f"pulled {args.image}: digest {image.digest} ({image.platform})")
    return 0


def _push(args: argparse.Namespace) -> int:
    from builder.registry.api import push_from_store
    from builder.store.store import open_store

    with open_store(state_root(args)) as store:
        result = push_from_store(args.image, store, options=registry_options(args),
                                 progress=None if args.quiet else _say)
    if args.quiet:
        print(result.digest)
    else:
        print(f"pushed {result.reference}: digest {result.digest} ({len(result.uploaded)} uploaded, "
              f"{len(result.mounted)} mounted, {len(result.existing)} already there)")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _login(args: argparse.Namespace) -> int:
    import getpass

    from builder.errors import UsageError
    from builder.registry.credentials import Credentials, store_credentials
    from builder.registry.login import normalize_registry_host, verify_login

    host = normalize_registry_host(args.registry)
    username = args.username
    if args.password is not None and args.password_stdin:
        raise UsageError("--password and --password-stdin cannot be used together")
    if args.password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    else:
        if not sys.stdin.isatty():
            raise UsageError("no password given: use --password-stdin (or run in a terminal)")
        username = username or input("Username: ").strip()
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("a username and a password are required")
    creds = Credentials(username, password)
    verify_login(host, creds, registry_options(args))
    path = store_credentials(host, creds)
    print(f"Login Succeeded (credentials saved in {path})")
    return 0


def _logout(args: argparse.Namespace) -> int:
    from builder.registry.credentials import erase_credentials
    from builder.registry.login import normalize_registry_host

    host = normalize_registry_host(args.registry)
    if erase_credentials(host):
        print(f"Removed login credentials for {host}")
    else:
        print(f"Not logged in to {host}")
    return 0
