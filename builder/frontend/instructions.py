"""Typed Dockerfile instructions: one dataclass per instruction, built from parse nodes.

``from_node(node)`` checks an instruction the way BuildKit's
``instructions.Parse`` does — argument counts, flags (unknown, duplicate,
bad value), forms — and returns its dataclass. Words are kept as written
(quotes and ``$VARS`` included): expansion happens per stage, in
``builder.frontend.stages``, because it depends on the stage's ARG/ENV.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from builder.frontend.errors import DockerfileError, suggest_instruction
from builder.frontend.flags import FlagKind, FlagSpec, ParsedFlags, parse_flags
from builder.frontend.lexer import Heredoc, parse_heredoc_word
from builder.frontend.mounts import Mount, parse_mount
from builder.frontend.parser import Node

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class Instruction:
    """What every instruction has: its keyword and where it is."""

    keyword: ClassVar[str] = ""
    line: int = 0
    end_line: int = 0
    col: int = 1
    original: str = ""

    def to_json(self) -> dict:
        out: dict[str, object] = {"instruction": self.keyword, "line": self.line,
                                  "end_line": self.end_line}
        out.update(self._fields_json())
        return out

    def _fields_json(self) -> dict:
        return {}


@dataclass
class KeyValue:
    key: str
    value: str
    legacy: bool = False  # written as ``ENV key value`` (no '=')

    def to_json(self) -> dict:
        out: dict[str, object] = {"key": self.key, "value": self.value}
        if self.legacy:
            out["legacy"] = True
        return out


@dataclass
class ArgDecl:
    name: str
    default: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "default": self.default}


@dataclass
class CommandLine:
    """A command in exec form (``["a", "b"]``) or shell form (one string)."""

    args: list[str]
    shell_form: bool

    def to_json(self) -> dict:
        return {"form": "shell" if self.shell_form else "exec", "args": self.args}


@dataclass
class FromInstruction(Instruction):
    keyword: ClassVar[str] = "FROM"
    image: str = ""
    stage_name: str | None = None
    platform: str | None = None

    def _fields_json(self) -> dict:
        return {"image": self.image, "as": self.stage_name, "platform": self.platform}


@dataclass
class RunInstruction(Instruction):
    keyword: ClassVar[str] = "RUN"
    command: CommandLine = field(default_factory=lambda: CommandLine([], True))
    heredocs: list[Heredoc] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    mount_specs: list[str] = field(default_factory=list)  # as written, for expansion
    network: str = "default"
    security: str = "sandbox"

    def _fields_json(self) -> dict:
        return {"command": self.command.to_json(), "heredocs": [_heredoc_json(h) for h in self.heredocs],
                "mounts": [m.to_json() for m in self.mounts], "network": self.network,
                "security": self.security}


@dataclass
class CmdInstruction(Instruction):
    keyword: ClassVar[str] = "CMD"
    command: CommandLine = field(default_factory=lambda: CommandLine([], False))

    def _fields_json(self) -> dict:
        return {"command": self.command.to_json()}


@dataclass
class EntrypointInstruction(CmdInstruction):
    keyword: ClassVar[str] = "ENTRYPOINT"


@dataclass
class ShellInstruction(Instruction):
    keyword: ClassVar[str] = "SHELL"
    shell: list[str] = field(default_factory=list)

    def _fields_json(self) -> dict:
        return {"shell": self.shell}


@dataclass
class SourceContent:
    """A COPY/ADD source given inline as a heredoc."""

    name: str
    data: str
    expand: bool

    def to_json(self) -> dict:
        return {"name": self.name, "data": self.data, "expand": self.expand}


@dataclass
class CopyInstruction(Instruction):
    keyword: ClassVar[str] = "COPY"
    sources: list[str] = field(default_factory=list)
    dest: str = ""
    contents: list[SourceContent] = field(default_factory=list)  # heredoc sources
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: list[str] = field(default_factory=list)

    def _fields_json(self) -> dict:
        return {"sources": self.sources, "dest": self.dest,
                "contents": [c.to_json() for c in self.contents], "from": self.from_,
                "chown": self.chown, "chmod": self.chmod, "link": self.link,
                "parents": self.parents, "exclude": self.excludes}


@dataclass
class AddInstruction(CopyInstruction):
    keyword: ClassVar[str] = "ADD"
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None

    def _fields_json(self) -> dict:
        out = super()._fields_json()
        out.pop("from")
        out.update({"checksum": self.checksum, "keep_git_dir": self.keep_git_dir, "unpack": self.unpack})
        return out


@dataclass
class EnvInstruction(Instruction):
    keyword: ClassVar[str] = "ENV"
    pairs: list[KeyValue] = field(default_factory=list)

    def _fields_json(self) -> dict:
        return {"pairs": [p.to_json() for p in self.pairs]}


@dataclass
class LabelInstruction(EnvInstruction):
    keyword: ClassVar[str] = "LABEL"


@dataclass
class ArgInstruction(Instruction):
    keyword: ClassVar[str] = "ARG"
    args: list[ArgDecl] = field(default_factory=list)

    def _fields_json(self) -> dict:
        return {"args": [a.to_json() for a in self.args]}


@dataclass
class ExposeInstruction(Instruction):
    keyword: ClassVar[str] = "EXPOSE"
    ports: list[str] = field(default_factory=list)

    def _fields_json(self) -> dict:
        return {"ports": self.ports}


@dataclass
class UserInstruction(Instruction):
    keyword: ClassVar[str] = "USER"
    user: str = ""

    def _fields_json(self) -> dict:
        return {"user": self.user}


@dataclass
class WorkdirInstruction(Instruction):
    keyword: ClassVar[str] = "WORKDIR"
    path: str = ""

    def _fields_json(self) -> dict:
        return {"path": self.path}


@dataclass
class VolumeInstruction(Instruction):
    keyword: ClassVar[str] = "VOLUME"
    volumes: list[str] = field(default_factory=list)

    def _fields_json(self) -> dict:
        return {"volumes": self.volumes}


@dataclass
class StopSignalInstruction(Instruction):
    keyword: ClassVar[str] = "STOPSIGNAL"
    signal: str = ""

    def _fields_json(self) -> dict:
        return {"signal": self.signal}


@dataclass
class HealthcheckInstruction(Instruction):
    keyword: ClassVar[str] = "HEALTHCHECK"
    # ["NONE"], ["CMD", args...] or ["CMD-SHELL", command], as in the image config.
    test: list[str] = field(default_factory=list)
    interval: float | None = None  # seconds
    timeout: float | None = None
    start_period: float | None = None
    start_interval: float | None = None
    retries: int | None = None

    def _fields_json(self) -> dict:
        return {"test": self.test, "interval": self.interval, "timeout": self.timeout,
                "start_period": self.start_period, "start_interval": self.start_interval,
                "retries": self.retries}


@dataclass
class OnbuildInstruction(Instruction):
    keyword: ClassVar[str] = "ONBUILD"
    expression: str = ""  # the trigger as written, stored in the image config
    trigger: Instruction | None = None

    def _fields_json(self) -> dict:
        return {"expression": self.expression,
                "trigger": self.trigger.to_json() if self.trigger else None}


@dataclass
class MaintainerInstruction(Instruction):
    keyword: ClassVar[str] = "MAINTAINER"
    maintainer: str = ""

    def _fields_json(self) -> dict:
        return {"maintainer": self.maintainer}


def _heredoc_json(h: Heredoc) -> dict:
    return {"name": h.name, "fd": h.file_descriptor, "expand": h.expand, "chomp": h.chomp,
            "content": h.content}


# --- building typed instructions from nodes ----------------------------------


class _Ctx:
    """One node being turned into an instruction, for error positions."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.name = node.value.upper()

    def error(self, message: str, hint: str | None = None, at_args: bool = True) -> DockerfileError:
        line, col = (self.node.args_pos if at_args and self.node.args_pos
                     else (self.node.start_line, self.node.col))
        return DockerfileError(message, line=line or self.node.start_line, col=col,
                               end_line=self.node.end_line, hint=hint)

    def flags(self, *specs: FlagSpec) -> ParsedFlags:
        try:
            return parse_flags(self.name, self.node.flags, self.node.flag_pos, specs)
        except DockerfileError as exc:
            if not exc.line:
                exc.line, exc.col = self.node.start_line, self.node.col
            raise

    def base(self) -> dict:
        n = self.node
        return {"line": n.start_line, "end_line": n.end_line, "col": n.col, "original": n.original}


def _require(ctx: _Ctx, args: list[str], *, exactly: int | None = None, at_least: int | None = None,
             usage: str = "") -> None:
    if exactly is not None and len(args) != exactly:
        word = {1: "one argument"}.get(exactly, f"{exactly} arguments")
        raise ctx.error(f"{ctx.name} requires exactly {word}", hint=usage or None,
                        at_args=bool(args))
    if at_least is not None and len(args) < at_least:
        word = {1: "one argument"}.get(at_least, f"{at_least} arguments")
        raise ctx.error(f"{ctx.name} requires at least {word}", hint=usage or None,
                        at_args=bool(args))


def parse_duration(ctx: _Ctx, flag: str, value: str | None) -> float | None:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    if value is None or value == "":
        return None
    if value == "0":
        return 0.0
    if not _DURATION.match(value):
        raise ctx.error(f"invalid duration {value!r} for --{flag}",
                        hint="use a duration such as 30s, 1m30s or 500ms", at_args=False)
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    if 0 < seconds < 0.001:
        raise ctx.error(f"--{flag} cannot be less than 1ms", at_args=False)
    return seconds


def _command_line(node: Node) -> CommandLine:
    if node.json:
        return CommandLine(node.args, shell_form=False)
    return CommandLine([" ".join(node.args)] if node.next else [], shell_form=True)


def _sources_and_dest(ctx: _Ctx, heredocs: list[Heredoc]) -> tuple[list[str], str, list[SourceContent]]:
    args = ctx.node.args
    if len(args) < 2:
        raise ctx.error(
            f"{ctx.name} requires at least two arguments, but only {len(args)} was provided. "
            "Destination could not be determined.",
            hint=f"{ctx.name} <src>... <dest>", at_args=bool(args),
        )
    sources: list[str] = []
    contents: list[SourceContent] = []
    remaining = list(heredocs)
    for src in args[:-1]:
        doc = None if ctx.node.json else parse_heredoc_word(src) if "<<" in src else None
        if doc is not None and remaining:
            match = next((h for h in remaining if h.name == doc.name), None)
            if match is not None:
                remaining.remove(match)
                contents.append(SourceContent(match.name, match.chomped(), match.expand))
                continue
        sources.append(src)
    return sources, args[-1], contents


def _from(ctx: _Ctx) -> FromInstruction:
    f = ctx.flags(FlagSpec("platform"))
    args = ctx.node.args
    if not args:
        raise ctx.error("FROM requires an image", hint="FROM <image> [AS <name>]", at_args=False)
    if len(args) not in (1, 3):
        raise ctx.error("FROM requires either one or three arguments",
                        hint="FROM <image> [AS <name>]", at_args=bool(args))
    stage = None
    if len(args) == 3:
        if args[1].lower() != "as":
            raise ctx.error(f"FROM requires 'AS' as its second word, not {args[1]!r}",
                            hint="FROM <image> AS <name>")
        stage = args[2].lower()
        if not _STAGE_NAME.match(stage):
            raise ctx.error(f"invalid name for build stage: {args[2]!r}, name can't start "
                            "with a number or contain symbols",
                            hint="stage names match [a-z][a-z0-9-_.]*")
    return FromInstruction(**ctx.base(), image=args[0], stage_name=stage,
                           platform=f.get("platform"))  # type: ignore[arg-type]


def _flag_error(ctx: _Ctx, f: ParsedFlags, name: str, message: str, hint: str) -> DockerfileError:
    line, col = f.positions.get(name, (ctx.node.start_line, ctx.node.col))
    return DockerfileError(message, line=line, col=col, end_line=ctx.node.end_line, hint=hint)


def _run(ctx: _Ctx) -> RunInstruction:
    f = ctx.flags(FlagSpec("mount", FlagKind.LIST), FlagSpec("network"), FlagSpec("security"),
                  FlagSpec("device", FlagKind.LIST))
    if not ctx.node.next:
        raise ctx.error("RUN requires at least one argument", hint="RUN <command>", at_args=False)
    network = str(f.get("network") or "default")
    if network not in ("default", "none", "host"):
        raise _flag_error(ctx, f, "network", f"invalid --network value {network!r}",
                          "--network is one of default, none, host")
    security = str(f.get("security") or "sandbox")
    if security not in ("sandbox", "insecure"):
        raise _flag_error(ctx, f, "security", f"invalid --security value {security!r}",
                          "--security is one of sandbox, insecure")
    specs = list(f.get("mount"))  # type: ignore[arg-type]
    mounts = []
    line, col = f.positions.get("mount", (ctx.node.start_line, ctx.node.col))
    ssh = 0
    for spec in specs:
        try:
            # Values may hold $VARS: validate the shape now, expand per stage later.
            m = parse_mount(spec, index=ssh)
        except DockerfileError as exc:
            exc.line, exc.col = line, col
            raise
        ssh += m.type == "ssh"
        mounts.append(m)
    return RunInstruction(**ctx.base(), command=_command_line(ctx.node), heredocs=ctx.node.heredocs,
                          mounts=mounts, mount_specs=specs, network=network, security=security)


def _cmd(cls):
    def build(ctx: _Ctx):
        ctx.flags()
        return cls(**ctx.base(), command=_command_line(ctx.node))
    return build


def _shell(ctx: _Ctx) -> ShellInstruction:
    ctx.flags()
    if not ctx.node.next:
        raise ctx.error("SHELL requires at least one argument", hint='SHELL ["/bin/sh", "-c"]',
                        at_args=False)
    if not ctx.node.json:
        raise ctx.error("SHELL requires the arguments to be in JSON form",
                        hint='SHELL ["executable", "parameters"]')
    return ShellInstruction(**ctx.base(), shell=ctx.node.args)


def _validate_chmod(ctx: _Ctx, chmod: str | None, f: ParsedFlags) -> None:
    if chmod is None or "$" in chmod:
        return
    if re.fullmatch(r"[0-7]{3,4}", chmod):
        return
    # Symbolic modes (u+x,go-w) as BuildKit accepts them.
    if re.fullmatch(r"([ugoa]*[-+=]([rwxXst]*|[ugo]))(,[ugoa]*[-+=]([rwxXst]*|[ugo]))*", chmod):
        return
    raise _flag_error(ctx, f, "chmod", f"invalid --chmod value {chmod!r}",
                      "use an octal mode such as 0755, or a symbolic one such as u+x")


def _copy(ctx: _Ctx) -> CopyInstruction:
    f = ctx.flags(FlagSpec("from"), FlagSpec("chown"), FlagSpec("chmod"),
                  FlagSpec("link", FlagKind.BOOL, False), FlagSpec("parents", FlagKind.BOOL, False),
                  FlagSpec("exclude", FlagKind.LIST))
    sources, dest, contents = _sources_and_dest(ctx, ctx.node.heredocs)
    chmod = f.get("chmod")
    _validate_chmod(ctx, chmod, f)  # type: ignore[arg-type]
    return CopyInstruction(**ctx.base(), sources=sources, dest=dest, contents=contents,
                           from_=f.get("from"), chown=f.get("chown"), chmod=chmod,  # type: ignore[arg-type]
                           link=bool(f.get("link")), parents=bool(f.get("parents")),
                           excludes=list(f.get("exclude")))  # type: ignore[arg-type]


def _add(ctx: _Ctx) -> AddInstruction:
    f = ctx.flags(FlagSpec("chown"), FlagSpec("chmod"), FlagSpec("link", FlagKind.BOOL, False),
                  FlagSpec("parents", FlagKind.BOOL, False), FlagSpec("exclude", FlagKind.LIST),
                  FlagSpec("checksum"), FlagSpec("keep-git-dir", FlagKind.BOOL, False),
                  FlagSpec("unpack", FlagKind.BOOL))
    sources, dest, contents = _sources_and_dest(ctx, ctx.node.heredocs)
    chmod = f.get("chmod")
    _validate_chmod(ctx, chmod, f)  # type: ignore[arg-type]
    checksum = f.get("checksum")
    if checksum is not None and "$" not in checksum and not re.fullmatch(
            r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})", checksum):  # type: ignore[arg-type]
        raise _flag_error(ctx, f, "checksum", f"invalid --checksum value {checksum!r}",
                          "use a digest such as sha256:<64 hex digits>")
    return AddInstruction(**ctx.base(), sources=sources, dest=dest, contents=contents,
                          chown=f.get("chown"), chmod=chmod, link=bool(f.get("link")),  # type: ignore[arg-type]
                          parents=bool(f.get("parents")), excludes=list(f.get("exclude")),  # type: ignore[arg-type]
                          checksum=checksum, keep_git_dir=bool(f.get("keep-git-dir")),  # type: ignore[arg-type]
                          unpack=f.get("unpack"))  # type: ignore[arg-type]


def _pairs(ctx: _Ctx) -> list[KeyValue]:
    vals = ctx.node.args
    if not vals:
        raise ctx.error(f"{ctx.name} requires at least one argument",
                        hint=f"{ctx.name} <key>=<value> ...", at_args=False)
    return [KeyValue(vals[i], vals[i + 1], legacy=vals[i + 2] == "") for i in range(0, len(vals) - 2, 3)]


def _env(ctx: _Ctx) -> EnvInstruction:
    ctx.flags()
    pairs = _pairs(ctx)
    for p in pairs:
        if p.key == "":
            raise ctx.error("ENV names can not be blank", hint="ENV NAME=value")
    return EnvInstruction(**ctx.base(), pairs=pairs)


def _label(ctx: _Ctx) -> LabelInstruction:
    ctx.flags()
    return LabelInstruction(**ctx.base(), pairs=_pairs(ctx))


def _arg(ctx: _Ctx) -> ArgInstruction:
    ctx.flags()
    words = ctx.node.args
    if not words:
        raise ctx.error("ARG requires at least one argument", hint="ARG <name>[=<default>]",
                        at_args=False)
    decls = []
    for word in words:
        name, eq, default = word.partition("=")
        if not name:
            raise ctx.error(f"ARG names can not be blank: {word!r}", hint="ARG NAME=default")
        decls.append(ArgDecl(name, default if eq else None))
    return ArgInstruction(**ctx.base(), args=decls)


def _one(cls, attr: str, usage: str):
    def build(ctx: _Ctx):
        ctx.flags()
        _require(ctx, ctx.node.args, exactly=1, usage=usage)
        return cls(**ctx.base(), **{attr: ctx.node.args[0]})
    return build


def _expose(ctx: _Ctx) -> ExposeInstruction:
    ctx.flags()
    _require(ctx, ctx.node.args, at_least=1, usage="EXPOSE <port>[/<protocol>] ...")
    return ExposeInstruction(**ctx.base(), ports=ctx.node.args)


def _volume(ctx: _Ctx) -> VolumeInstruction:
    ctx.flags()
    _require(ctx, ctx.node.args, at_least=1, usage='VOLUME ["/data"]')
    for v in ctx.node.args:
        if not v.strip():
            raise ctx.error("VOLUME specified can not be an empty string")
    return VolumeInstruction(**ctx.base(), volumes=ctx.node.args)


def _healthcheck(ctx: _Ctx) -> HealthcheckInstruction:
    args = ctx.node.args
    if not args:
        raise ctx.error("HEALTHCHECK requires an argument", hint="HEALTHCHECK [options] CMD <command> | NONE",
                        at_args=False)
    typ = args[0].upper()
    if typ == "NONE":
        if len(args) > 1 or ctx.node.flags:
            raise ctx.error("HEALTHCHECK NONE takes no arguments")
        return HealthcheckInstruction(**ctx.base(), test=["NONE"])
    if typ != "CMD":
        raise ctx.error(f"unknown type {args[0]!r} in HEALTHCHECK (try CMD)",
                        hint="HEALTHCHECK [options] CMD <command> | NONE")
    f = ctx.flags(FlagSpec("interval"), FlagSpec("timeout"), FlagSpec("start-period"),
                  FlagSpec("start-interval"), FlagSpec("retries"))
    rest = args[1:]
    if not rest or (len(rest) == 1 and not ctx.node.json and not rest[0]):
        raise ctx.error("missing command after HEALTHCHECK CMD", hint="HEALTHCHECK CMD <command>")
    test = ["CMD", *rest] if ctx.node.json else ["CMD-SHELL", rest[0]]
    retries = f.get("retries")
    n_retries = None
    if retries is not None:
        try:
            n_retries = int(retries)  # type: ignore[arg-type]
        except ValueError:
            raise ctx.error(f"invalid --retries value {retries!r}", hint="--retries takes a whole number",
                            at_args=False) from None
        if n_retries < 0:
            raise ctx.error("--retries cannot be negative", at_args=False)
    return HealthcheckInstruction(
        **ctx.base(), test=test,
        interval=parse_duration(ctx, "interval", f.get("interval")),  # type: ignore[arg-type]
        timeout=parse_duration(ctx, "timeout", f.get("timeout")),  # type: ignore[arg-type]
        start_period=parse_duration(ctx, "start-period", f.get("start-period")),  # type: ignore[arg-type]
        start_interval=parse_duration(ctx, "start-interval", f.get("start-interval")),  # type: ignore[arg-type]
        retries=n_retries,
    )


def _onbuild(ctx: _Ctx) -> OnbuildInstruction:
    ctx.flags()
    if not ctx.node.next or not ctx.node.next[0].children:
        raise ctx.error("ONBUILD requires at least one argument", hint="ONBUILD <INSTRUCTION>",
                        at_args=False)
    sub = ctx.node.next[0].children[0]
    sub.start_line = sub.start_line or ctx.node.start_line
    sub.end_line = sub.end_line or ctx.node.end_line
    sub.original = sub.original or ctx.node.original
    sub.heredocs = sub.heredocs or ctx.node.heredocs
    word = sub.value.upper()
    if word == "ONBUILD":
        raise ctx.error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if word in ("FROM", "MAINTAINER"):
        raise ctx.error(f"{word} isn't allowed as an ONBUILD trigger")
    trigger = from_node(sub)
    # The image config stores the trigger's text after the ONBUILD keyword.
    original = ctx.node.original.strip()
    expression = original[len(ctx.node.value):].strip()
    return OnbuildInstruction(**ctx.base(), expression=expression, trigger=trigger)


_BUILDERS = {
    "FROM": _from, "RUN": _run, "CMD": _cmd(CmdInstruction), "ENTRYPOINT": _cmd(EntrypointInstruction),
    "SHELL": _shell, "COPY": _copy, "ADD": _add, "ENV": _env, "LABEL": _label, "ARG": _arg,
    "EXPOSE": _expose, "USER": _one(UserInstruction, "user", "USER <user>[:<group>]"),
    "WORKDIR": _one(WorkdirInstruction, "path", "WORKDIR /path"),
    "STOPSIGNAL": _one(StopSignalInstruction, "signal", "STOPSIGNAL SIGTERM"),
    "MAINTAINER": _one(MaintainerInstruction, "maintainer", "MAINTAINER <name>"),
    "VOLUME": _volume, "HEALTHCHECK": _healthcheck, "ONBUILD": _onbuild,
}


def from_node(node: Node) -> Instruction:
    """The typed instruction for one parse node (raises ``DockerfileError``)."""
    ctx = _Ctx(node)
    build = _BUILDERS.get(ctx.name)
    if build is None:
        guess = suggest_instruction(node.value)
        hint = f"did you mean {guess}?" if guess else "see the Dockerfile reference for the instructions"
        if not node.value:
            raise ctx.error("empty instruction", hint="remove the stray line continuation",
                            at_args=False)
        message = f"unknown instruction: {node.value}"
        if guess:
            message += f" (did you mean {guess}?)"
        raise ctx.error(message, hint=hint, at_args=False)
    try:
        return build(ctx)
    except DockerfileError as exc:
        # Helpers such as the heredoc-name and --mount parsers know no position: the
        # instruction's is the best there is.
        if exc.line <= 0:
            exc.line, exc.col, exc.end_line = node.start_line, node.col, node.end_line
        raise
