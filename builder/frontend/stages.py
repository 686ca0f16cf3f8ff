"""A parsed Dockerfile as stages, and ARG/ENV expansion with BuildKit's scoping rules.

``parse(text)`` gives a ``Dockerfile``: parser directives, the global
(meta) ARGs before the first FROM, and the stages with their typed
instructions. Expansion is separate and pure: ``resolve_meta_args`` gives the
values of the global ARGs, ``expand_from`` the base of each stage, and an
``ExpansionScope`` walks one stage, applying ARG/ENV scoping and expanding
each instruction exactly where BuildKit does (ENV, LABEL, ARG defaults,
COPY/ADD, EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL, RUN --mount values;
not RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK commands, which the shell sees).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Mapping

from builder.frontend.errors import DockerfileError
from builder.frontend.instructions import (
    AddInstruction,
    ArgInstruction,
    CopyInstruction,
    EnvInstruction,
    ExposeInstruction,
    FromInstruction,
    Instruction,
    KeyValue,
    LabelInstruction,
    RunInstruction,
    SourceContent,
    StopSignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
    from_node,
)
from builder.frontend.mounts import parse_mount
from builder.frontend.parser import gc_paused, parse_dockerfile

# Build args BuildKit defines without a declaration in the global scope.
PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                 "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")
# Proxy args are passed to RUN without a declaration and never persisted.
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


@dataclass
class Stage:
    """One ``FROM`` and the instructions up to the next one."""

    index: int
    name: str | None
    from_: FromInstruction
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return self.name if self.name is not None else str(self.index)

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "line": self.from_.line,
                "from": self.from_.to_json(),
                "instructions": [i.to_json() for i in self.instructions]}


@dataclass
class Dockerfile:
    """A whole Dockerfile, typed."""

    filename: str
    escape: str
    directives: dict[str, str]
    meta_args: list[ArgInstruction]
    stages: list[Stage]
    warnings: list[str] = field(default_factory=list)

    def stage(self, ref: str | int) -> Stage:
        """A stage by name (case-insensitive) or index; raises for an unknown one."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            i = int(ref)
            if 0 <= i < len(self.stages):
                return self.stages[i]
        else:
            for s in self.stages:
                if s.name == ref.lower():
                    return s
        names = ", ".join(s.ref for s in self.stages)
        raise DockerfileError(f"stage {ref!r} not found", filename=self.filename,
                              hint=f"the stages are: {names}")

    @property
    def syntax(self) -> str | None:
        return self.directives.get("syntax")

    def to_json(self) -> dict:
        return {
            "schema": "pybuild.frontend/v1",
            "file": self.filename,
            "escape": self.escape,
            "directives": self.directives,
            "meta_args": [a.to_json() for a in self.meta_args],
            "stages": [s.to_json() for s in self.stages],
            "warnings": self.warnings,
        }


def parse(text: str | bytes, filename: str = "Dockerfile") -> Dockerfile:
    """Parse and type a Dockerfile (raises ``DockerfileError`` with a position)."""
    result = parse_dockerfile(text, filename)
    lines = (text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text).split("\n")
    meta: list[ArgInstruction] = []
    names: dict[str, int] = {}
    try:
        with gc_paused():
            stages = _group(result, meta, names)
    except DockerfileError as exc:
        raise exc.with_source(filename, lines) from None
    if not stages:
        raise DockerfileError("no FROM instruction: the Dockerfile has no build stage",
                              filename=filename, hint="start a stage with FROM <image>")
    warnings = [f"{filename}:{line}: {msg}" for line, msg in result.warnings]
    return Dockerfile(filename, result.escape, dict(result.directives), meta, stages, warnings)


def _group(result, meta: list[ArgInstruction], names: dict[str, int]) -> list[Stage]:
    """Type each instruction and group them into stages (global ARGs go to ``meta``)."""
    stages: list[Stage] = []
    for node in result.ast.children:
        instr = from_node(node)
        if isinstance(instr, FromInstruction):
            if instr.stage_name is not None:
                if instr.stage_name in names:
                    raise DockerfileError(
                        f"duplicate stage name {instr.stage_name!r}", line=instr.line,
                        col=instr.col,
                        hint=f"it is already the name of the stage on line {names[instr.stage_name]}",
                    )
                names[instr.stage_name] = instr.line
            stages.append(Stage(len(stages), instr.stage_name, instr))
        elif not stages:
            if not isinstance(instr, ArgInstruction):
                raise DockerfileError(
                    f"{instr.keyword} before the first FROM: no build stage in current context",
                    line=instr.line, col=instr.col,
                    hint="only ARG may come before the first FROM",
                )
            meta.append(instr)
        else:
            stages[-1].instructions.append(instr)
    return stages


def parse_trigger(expression: str, escape: str, filename: str, line: int) -> Instruction:
    """One ONBUILD trigger from a base image's config, typed, reported at the FROM's ``line``.

    The text comes from whoever made the image: it must be exactly one instruction, and not
    FROM, MAINTAINER or ONBUILD (BuildKit's rules); anything else is a ``DockerfileError``.
    """
    prefix = "# escape=`\n" if escape == "`" else ""
    try:
        nodes = parse_dockerfile(prefix + "FROM scratch\n" + expression + "\n", filename).ast.children[1:]
        if len(nodes) != 1:
            raise DockerfileError(f"a trigger is one instruction, this is {len(nodes)}")
        keyword = nodes[0].value.upper()
        if keyword in ("FROM", "MAINTAINER", "ONBUILD"):
            raise DockerfileError(f"{keyword} isn't allowed as an ONBUILD trigger")
        with gc_paused():
            instr = from_node(nodes[0])
    except DockerfileError as exc:
        shown = expression if len(expression) <= 60 else expression[:60] + "…"
        raise DockerfileError(
            f"invalid ONBUILD trigger {json.dumps(shown, ensure_ascii=False)} in the base image: {exc.message}",
            line=line, filename=filename, hint="the base image's ONBUILD triggers run before this stage's "
            "instructions; rebuild the base image or use another") from None
    return dataclasses.replace(instr, line=line, end_line=line)


# --- expansion ---------------------------------------------------------------


def _lexer(escape: str):
    from builder.frontend.shell import Lexer

    return Lexer(escape=escape)


def _expansion_error(instr: Instruction, exc: Exception, filename: str) -> DockerfileError:
    if isinstance(exc, DockerfileError):
        return exc
    return DockerfileError(f"failed to expand {instr.keyword} arguments: {exc}", line=instr.line,
                           col=instr.col, filename=filename,
                           hint="check the ${...} syntax; use ${VAR:-default} for unset variables")


def resolve_meta_args(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    predefined: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Values of the global ARGs (declared before the first FROM).

    A ``--build-arg`` overrides a default; defaults may use earlier global
    ARGs and the predefined platform args.
    """
    lexer = _lexer(dockerfile.escape)
    values: dict[str, str | None] = {}
    env: dict[str, str] = dict(predefined or {})
    for instr in dockerfile.meta_args:
        for decl in instr.args:
            if decl.name in build_args:
                value: str | None = build_args[decl.name]
            elif decl.default is not None:
                try:
                    value = lexer.process_word(decl.default, env)
                except Exception as exc:
                    raise _expansion_error(instr, exc, dockerfile.filename) from None
            else:
                value = None
            values[decl.name] = value
            if value is not None:
                env[decl.name] = value
            else:
                env.pop(decl.name, None)
    return values


def expand_from(
    dockerfile: Dockerfile, stage: Stage, meta_values: Mapping[str, str | None],
    predefined: Mapping[str, str] | None = None,
) -> FromInstruction:
    """The stage's FROM with its image and --platform expanded by the global ARGs."""
    env = {k: v for k, v in (predefined or {}).items()}
    env.update({k: v for k, v in meta_values.items() if v is not None})
    lexer = _lexer(dockerfile.escape)
    instr = stage.from_
    try:
        image = lexer.process_word(instr.image, env)
        platform = lexer.process_word(instr.platform, env) if instr.platform else None
    except Exception as exc:
        raise _expansion_error(instr, exc, dockerfile.filename) from None
    if not image:
        raise DockerfileError(f"base name ({instr.image}) should not be blank", line=instr.line,
                              col=instr.col, filename=dockerfile.filename,
                              hint="give the ARG used in FROM a default or pass --build-arg")
    return dataclasses.replace(instr, image=image, platform=platform)


class _Variables(Mapping[str, str]):
    """ENV over ARG (ARGs without a value are unset), looked up in place."""

    __slots__ = ("env", "args")

    def __init__(self, env: Mapping[str, str], args: Mapping[str, str | None]) -> None:
        self.env = env
        self.args = args

    def __getitem__(self, name: str) -> str:
        if name in self.env:
            return self.env[name]
        value = self.args[name]
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self.env or self.args.get(name) is not None  # type: ignore[call-overload]

    def __iter__(self):
        yield from self.env
        for name, value in self.args.items():
            if value is not None and name not in self.env:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class ExpansionScope:
    """ARG/ENV scoping inside one stage, and the expansion of its instructions.

    ``env`` starts as the base image's environment; ``ENV`` adds to it.
    ``ARG`` declares build args: their value is the ``--build-arg``, else the
    default, else (for a re-declared global ARG) the global value. ENV always
    wins over an ARG of the same name. ``used_args`` collects the ARG names
    that were declared (consumed), ``referenced`` every name looked up.
    """

    escape: str = "\\"
    env: dict[str, str] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    meta_values: Mapping[str, str | None] = field(default_factory=dict)
    args: dict[str, str | None] = field(default_factory=dict)
    used_args: set[str] = field(default_factory=set)
    referenced: set[str] = field(default_factory=set)
    filename: str = "Dockerfile"

    def __post_init__(self) -> None:
        self._lexer = _lexer(self.escape)

    def variables(self) -> Mapping[str, str]:
        """What ``$NAME`` sees: declared ARGs with a value, overridden by ENV.

        A live view, not a copy: copying per word made a stage with n ARG/ENV names cost n²
        (1,000 ENV pairs on one line took 30x what 100 took).
        """
        return _Variables(self.env, self.args)

    def word(self, text: str) -> str:
        result, matched, unmatched = self._lexer.process_word_with_matches(text, self.variables())
        self.referenced.update(matched)
        self.referenced.update(unmatched)
        return result

    def words(self, text: str) -> list[str]:
        return self._lexer.process_words(text, self.variables())

    def declare(self, name: str, default: str | None) -> None:
        self.used_args.add(name)
        if name in self.build_args:
            self.args[name] = self.build_args[name]
        elif default is not None:
            self.args[name] = self.word(default)
        elif name in self.meta_values:
            self.args[name] = self.meta_values[name]
        else:
            self.args[name] = None

    def expand(self, instr: Instruction) -> Instruction:
        """The instruction with its words expanded; ARG and ENV also update the scope."""
        try:
            return self._expand(instr)
        except DockerfileError as exc:
            # Errors of re-checked values (a --mount whose target expanded to nothing) carry
            # no position of their own.
            if exc.line <= 0:
                exc.line, exc.col, exc.end_line = instr.line, instr.col, instr.end_line
                exc.filename = self.filename
            raise
        except Exception as exc:
            raise _expansion_error(instr, exc, self.filename) from None

    def _expand(self, instr: Instruction) -> Instruction:
        replace = dataclasses.replace
        if isinstance(instr, ArgInstruction):
            for decl in instr.args:
                self.declare(decl.name, decl.default)
            return instr
        if isinstance(instr, EnvInstruction) and not isinstance(instr, LabelInstruction):
            pairs = []
            for p in instr.pairs:
                kv = KeyValue(self.word(p.key), self.word(p.value), p.legacy)
                self.env[kv.key] = kv.value
                pairs.append(kv)
            return replace(instr, pairs=pairs)
        if isinstance(instr, LabelInstruction):
            return replace(instr, pairs=[KeyValue(self.word(p.key), self.word(p.value), p.legacy)
                                         for p in instr.pairs])
        if isinstance(instr, CopyInstruction):
            opt = lambda v: self.word(v) if v is not None else None  # noqa: E731
            changes: dict[str, object] = dict(
                sources=[self.word(s) for s in instr.sources], dest=self.word(instr.dest),
                contents=[SourceContent(c.name, self.word_heredoc(c.data) if c.expand else c.data, c.expand)
                          for c in instr.contents],
                chown=opt(instr.chown), chmod=opt(instr.chmod),
                excludes=[self.word(e) for e in instr.excludes],
            )
            if isinstance(instr, AddInstruction):
                changes["checksum"] = opt(instr.checksum)
            else:
                changes["from_"] = opt(instr.from_)
            return replace(instr, **changes)  # type: ignore[arg-type]
        if isinstance(instr, ExposeInstruction):
            return replace(instr, ports=[w for p in instr.ports for w in self.words(p)])
        if isinstance(instr, UserInstruction):
            return replace(instr, user=self.word(instr.user))
        if isinstance(instr, WorkdirInstruction):
            return replace(instr, path=self.word(instr.path))
        if isinstance(instr, StopSignalInstruction):
            return replace(instr, signal=self.word(instr.signal))
        if isinstance(instr, VolumeInstruction):
            return replace(instr, volumes=[self.word(v) for v in instr.volumes])
        if isinstance(instr, RunInstruction) and instr.mount_specs:
            mounts, ssh = [], 0
            for spec in instr.mount_specs:
                m = parse_mount(spec, expand=self.word, index=ssh)
                ssh += m.type == "ssh"
                mounts.append(m)
            return replace(instr, mounts=mounts)
        return instr

    def word_heredoc(self, text: str) -> str:
        """A COPY heredoc body: expanded like a double-quoted word, newlines kept."""
        from builder.frontend.shell import Lexer

        lexer = Lexer(escape=self.escape, raw_quotes=True)
        return lexer.process_word(text, self.variables())


def unused_build_args(build_args: Mapping[str, str], used: set[str]) -> list[str]:
    """Build args nobody declared (BuildKit warns about these; predefined ones excepted)."""
    skip = set(PLATFORM_ARGS) | set(PROXY_ARGS) | {"BUILDKIT_INLINE_CACHE", "SOURCE_DATE_EPOCH"}
    return sorted(k for k in build_args if k not in used and k not in skip)
