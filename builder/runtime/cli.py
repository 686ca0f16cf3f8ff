"""``pybuild-runc``: runc's command line for the container lifecycle.

Global ``--root``, ``--log``, ``--log-format`` as runc has them; subcommands
spec, create, start, run, state, kill, delete, list, exec, ps. Start-up time
counts (``run`` is called once per container): the plain forms of the
lifecycle commands are parsed by ``_fast_parse`` without importing argparse
(anything else — help, abbreviations, errors — goes to the argparse parser,
which is the reference: a test checks that both give the same namespace), and
the runtime's modules are imported per command.
"""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from .errors import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

VERSION = "pybuild-runc 0.1.0\nspec: 1.0.2"


_GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--rootless", "--criu"}


def _subcommand_of(argv: list[str]) -> str | None:
    """The subcommand named in argv, skipping global options (and their values)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand's parser is built (start-up time)."""
    import argparse
    p = argparse.ArgumentParser(prog="pybuild-runc", description="A runc-compatible OCI runtime.")
    p.add_argument("--version", "-v", action="version", version=VERSION)
    p.add_argument("--root", default=None, help="state directory (default /run/pybuild-runc, or per-user for rootless)")
    p.add_argument("--log", default=None, help="append errors to this file")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--debug", action="store_true", help="accepted for runc compatibility")
    p.add_argument("--systemd-cgroup", action="store_true", help="not supported (refused)")
    p.add_argument("--rootless", default="auto", help="accepted for runc compatibility (detected)")
    p.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="subcommand", metavar="COMMAND")
    if only is not None and only in _KNOWN:
        sub = _OnlyOne(sub, only)

    s = sub.add_parser("spec", help="write a default config.json")
    s.add_argument("--bundle", "-b", default=".")
    s.add_argument("--rootless", dest="spec_rootless", action="store_true")

    def lifecycle(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--bundle", "-b", default=".")
        c.add_argument("--pid-file", default=None)
        c.add_argument("--console-socket", default=None)
        c.add_argument("--no-pivot", action="store_true")
        c.add_argument("--no-new-keyring", action="store_true")
        c.add_argument("--preserve-fds", type=int, default=0)
        c.add_argument("id")
        return c

    lifecycle("create", "create a container (its process waits for start)")
    r = lifecycle("run", "create and start a container")
    r.add_argument("--detach", "-d", action="store_true")
    r.add_argument("--keep", action="store_true", help="keep the stopped container's state")

    for name, help_ in (("start", "start a created container"), ("state", "print a container's state JSON")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("id")

    k = sub.add_parser("kill", help="send a signal to a container's init")
    k.add_argument("--all", "-a", action="store_true")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")

    d = sub.add_parser("delete", help="delete a container")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id")

    ls = sub.add_parser("list", help="list containers")
    ls.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ls.add_argument("--quiet", "-q", action="store_true")

    e = sub.add_parser("exec", help="run a process in a running container")
    e.add_argument("--env", "-e", action="append", default=[])
    e.add_argument("--cwd", default=None)
    e.add_argument("--user", "-u", default=None, help="UID[:GID]")
    e.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    e.add_argument("--tty", "-t", action="store_true")
    e.add_argument("--detach", "-d", action="store_true")
    e.add_argument("--pid-file", default=None)
    e.add_argument("--process", "-p", default=None, help="process.json to run instead of CMD")
    e.add_argument("--no-new-privs", action="store_true", default=None)
    e.add_argument("--cap", "-c", action="append", default=[])
    e.add_argument("--console-socket", default=None)
    e.add_argument("id")
    e.add_argument("command", nargs=argparse.REMAINDER)

    ps = sub.add_parser("ps", help="list a container's processes")
    ps.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ps.add_argument("id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER)

    for name in ("pause", "resume", "checkpoint", "restore", "update", "events"):
        u = sub.add_parser(name, help=f"{name} (not supported)")
        u.add_argument("rest", nargs=argparse.REMAINDER)
    return p


_KNOWN = {"spec", "create", "run", "start", "state", "kill", "delete", "list", "exec", "ps",
          "pause", "resume", "checkpoint", "restore", "update", "events"}


class _OnlyOne:
    """A stand-in for the subparsers action that builds one named subparser and skips the rest."""

    def __init__(self, real, name: str) -> None:
        self.real = real
        self.name = name

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        import argparse
        if name == self.name:
            return self.real.add_parser(name, **kwargs)
        return argparse.ArgumentParser(add_help=False)   # configured, then dropped


# What ``_fast_parse`` accepts: option -> (dest, kind); kind is "flag", "value" or "int".
_FAST_GLOBAL = {
    "--root": ("root", "value"), "--log": ("log", "value"), "--log-format": ("log_format", "value"),
    "--debug": ("debug", "flag"), "--systemd-cgroup": ("systemd_cgroup", "flag"),
    "--rootless": ("rootless", "value"), "--criu": ("criu", "value"),
}
_GLOBAL_DEFAULTS = {"root": None, "log": None, "log_format": "text", "debug": False, "systemd_cgroup": False,
                    "rootless": "auto", "criu": None}
_LIFECYCLE = {
    "--bundle": ("bundle", "value"), "-b": ("bundle", "value"), "--pid-file": ("pid_file", "value"),
    "--console-socket": ("console_socket", "value"), "--no-pivot": ("no_pivot", "flag"),
    "--no-new-keyring": ("no_new_keyring", "flag"), "--preserve-fds": ("preserve_fds", "int"),
}
_LIFECYCLE_DEFAULTS = {"bundle": ".", "pid_file": None, "console_socket": None, "no_pivot": False,
                       "no_new_keyring": False, "preserve_fds": 0}
# subcommand -> (its options, their defaults, positional names, how many of them are optional)
_FAST_COMMANDS = {
    "run": ({**_LIFECYCLE, "--detach": ("detach", "flag"), "-d": ("detach", "flag"), "--keep": ("keep", "flag")},
            {**_LIFECYCLE_DEFAULTS, "detach": False, "keep": False}, ("id",), 0),
    "create": (_LIFECYCLE, _LIFECYCLE_DEFAULTS, ("id",), 0),
    "start": ({}, {}, ("id",), 0),
    "state": ({}, {}, ("id",), 0),
    "delete": ({"--force": ("force", "flag"), "-f": ("force", "flag")}, {"force": False}, ("id",), 0),
    "kill": ({"--all": ("all", "flag"), "-a": ("all", "flag")}, {"all": False, "signal": "SIGTERM"},
             ("id", "signal"), 1),
}


def _take(argv: list[str], i: int, table: dict, out: dict) -> int | None:
    """Apply the option at ``argv[i]``; the index after it, or None if the fast parser cannot."""
    arg = argv[i]
    name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
    if name not in table:
        return None
    dest, kind = table[name]
    if kind == "flag":
        if eq:
            return None
        out[dest] = True
        return i + 1
    if eq:
        value, nxt = inline, i + 1
    elif i + 1 < len(argv):
        value, nxt = argv[i + 1], i + 2
    else:
        return None
    if not eq and value.startswith("-"):
        return None          # argparse's rules for values that look like options are subtle
    if kind == "int":
        if not value.isdigit():
            return None
        value = int(value)
    out[dest] = value
    return nxt


def _fast_parse(argv: list[str]) -> SimpleNamespace | None:
    """The namespace argparse would give for a plain lifecycle command line; None for anything else."""
    out = dict(_GLOBAL_DEFAULTS)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i = _take(argv, i, _FAST_GLOBAL, out)
        if i is None:
            return None
    if i >= len(argv) or argv[i] not in _FAST_COMMANDS or out["log_format"] not in ("text", "json"):
        return None
    command = argv[i]
    options, defaults, positional_names, optional = _FAST_COMMANDS[command]
    out.update(defaults)
    out["subcommand"] = command
    positionals: list[str] = []
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg != "-":
            i = _take(argv, i, options, out)
            if i is None:
                return None
        else:
            positionals.append(arg)
            i += 1
    if not len(positional_names) - optional <= len(positionals) <= len(positional_names):
        return None
    out.update(zip(positional_names, positionals))
    return SimpleNamespace(**out)


def _store(args: argparse.Namespace):
    from .state import StateStore, default_root
    return StateStore(args.root or default_root())


def _cmd_spec(args: argparse.Namespace) -> int:
    import json
    from .config import default_spec
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise RuntimeFailure(f"{path} already exists; remove it first")
    doc = default_spec(rootless=args.spec_rootless, uid=os.geteuid(), gid=os.getegid())
    with open(path, "w") as f:
        json.dump(doc, f, indent="\t")
    return 0


def _check_lifecycle_flags(args: argparse.Namespace) -> None:
    if args.no_pivot:
        raise RuntimeFailure("--no-pivot is not supported: pybuild-runc always uses pivot_root")
    if args.preserve_fds:
        raise RuntimeFailure("--preserve-fds is not supported")


def _early_cgroups(args: argparse.Namespace):
    """The container's cgroup directories, made before the rest of the runtime is imported, with
    the cgroup-attach lock warming meanwhile (see ``cgroupwarm``); None when that does not apply
    (rootless, a new cgroup namespace, an unreadable config, an id or cgroups taken: the usual
    path then makes them, or reports the error). Whoever is handed them removes them on failure."""
    if os.geteuid() != 0:
        return None
    from .bundle import cgroups_path, read_config
    from .state import check_id
    try:
        path = cgroups_path(read_config(os.path.abspath(args.bundle)))
        if path is None or os.path.exists(_store(args).dir(check_id(args.id))):
            return None
        from . import cgroups, cgroupwarm
        made = cgroups.make(args.id, path, required=False, exclusive=True)
    except RuntimeFailure:
        return None
    if made is not None and made.paths:
        cgroupwarm.start()
    return made


def _container_module(made):
    """``builder.runtime.container`` (the rest of the runtime); the early cgroups go if even that fails (Ctrl-C)."""
    try:
        from . import container
    except BaseException:
        if made is not None:
            from . import cgroups
            cgroups.destroy(made)
        raise
    return container


def _cmd_create(args: argparse.Namespace) -> int:
    _check_lifecycle_flags(args)
    made = _early_cgroups(args)
    container = _container_module(made)
    try:
        _, spec = container.load_bundle(os.path.abspath(args.bundle))
        tty_master = tty_slave = None
        if spec.process.terminal:
            if not args.console_socket:
                raise RuntimeFailure("process.terminal is true: create needs --console-socket")
            tty_master, tty_slave = os.openpty()
    except BaseException:
        container.drop_cgroups(made)
        raise
    container.create(_store(args), args.id, args.bundle,
                     container.CreateOptions(pid_file=args.pid_file, tty_slave=tty_slave,
                                             new_keyring=not args.no_new_keyring, cgroups=made))
    if tty_master is not None:
        container.send_console(args.console_socket, tty_master)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    _check_lifecycle_flags(args)
    made = _early_cgroups(args)
    container = _container_module(made)
    return container.run(_store(args), args.id, args.bundle, detach=args.detach, pid_file=args.pid_file,
                         console_socket=args.console_socket, keep=args.keep, new_keyring=not args.no_new_keyring,
                         cgroups_made=made)


def _cmd_start(args: argparse.Namespace) -> int:
    from . import container
    container.start(_store(args), args.id)
    return 0


def _cmd_state(args: argparse.Namespace) -> int:
    import json
    from . import container
    print(json.dumps(container.state_of(_store(args), args.id), indent=2))
    return 0


def _cmd_kill(args: argparse.Namespace) -> int:
    from . import container
    container.kill(_store(args), args.id, container.parse_signal(args.signal), all_processes=args.all)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from . import container
    container.delete(_store(args), args.id, force=args.force)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import json
    from . import container
    states = container.list_states(_store(args))
    if args.quiet:
        for s in states:
            print(s.id)
    elif args.format == "json":
        print(json.dumps([s.oci_state() for s in states]))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        for s in states:
            st = s.oci_state()
            rows.append((s.id, str(st["pid"]), st["status"], s.bundle, s.created, s.owner))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    from . import container
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    uid = gid = None
    if args.user:
        first, _, second = args.user.partition(":")
        try:
            uid = int(first)
            gid = int(second) if second else None
        except ValueError:
            raise RuntimeFailure(f"--user {args.user!r}: give numeric UID[:GID]") from None
    if args.console_socket:
        raise RuntimeFailure("exec --console-socket is not supported")
    opts = container.ExecOptions(
        args=command, env=args.env, cwd=args.cwd, uid=uid, gid=gid, additional_gids=args.additional_gids,
        tty=args.tty, detach=args.detach, pid_file=args.pid_file, process_json=args.process,
        no_new_privs=args.no_new_privs, cap_add=args.cap,
    )
    if not command and not args.process:
        raise RuntimeFailure("exec needs a command (or --process FILE)")
    return container.exec_in(_store(args), args.id, opts)


def _cmd_ps(args: argparse.Namespace) -> int:
    import json
    import subprocess
    from . import container
    state = _store(args).load(args.id)
    pids = container.container_pids(state)
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    ps_args = [a for a in args.ps_args if a != "--"] or ["-ef"]
    try:
        out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeFailure(f"ps {' '.join(ps_args)}: {e}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise RuntimeFailure("ps output has no PID column")
    col = header.index("PID")
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0


def _cmd_unsupported(args: argparse.Namespace) -> int:
    raise RuntimeFailure(f"{args.subcommand} is not supported by pybuild-runc")


_COMMANDS = {
    "spec": _cmd_spec, "create": _cmd_create, "run": _cmd_run, "start": _cmd_start, "state": _cmd_state,
    "kill": _cmd_kill, "delete": _cmd_delete, "list": _cmd_list, "exec": _cmd_exec, "ps": _cmd_ps,
}


def _log(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "log", None):
        return
    import json
    import time
    try:
        with open(args.log, "a") as f:
            if args.log_format == "json":
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                f.write(json.dumps({"level": "error", "msg": message, "time": stamp}) + "\n")
            else:
                f.write(f'time="{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}" level=error msg="{message}"\n')
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _exit_fast(_main(sys.argv[1:]))
    return _main(argv)


def _main(argv: list[str]) -> int:
    args = _fast_parse(argv)
    if args is None:
        parser = _parser(only=_subcommand_of(argv))
        args = parser.parse_args(argv)
        if args.subcommand is None:
            parser.print_help(sys.stderr)
            return 2
    try:
        if args.systemd_cgroup:
            raise RuntimeFailure("--systemd-cgroup is not supported: pybuild-runc manages cgroupfs directly")
        if args.rootless not in ("auto", "true", "false"):
            raise RuntimeFailure(f"--rootless {args.rootless!r}: use auto, true or false")
        if (args.rootless == "true") != (os.geteuid() != 0) and args.rootless != "auto":
            raise RuntimeFailure(f"--rootless {args.rootless} does not match this user (rootless mode is detected)")
        return int(_COMMANDS.get(args.subcommand, _cmd_unsupported)(args) or 0)
    except RuntimeFailure as exc:
        message = str(exc)
        _log(args, message)
        print(f"pybuild-runc: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # Anything the OS refused that was not turned into a RuntimeFailure: still one line.
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        _log(args, message)
        print(f"pybuild-runc: {message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug, but still one line for the caller
        message = f"internal error: {type(exc).__name__}: {exc}"
        _log(args, message)
        print(f"pybuild-runc: {message}", file=sys.stderr)
        return 1


def _exit_fast(code: int) -> None:
    """Leave without interpreter teardown: it is measurable per container run."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    _exit_fast(main())
