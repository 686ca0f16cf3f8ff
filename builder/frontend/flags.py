"""Instruction flags (``--name=value``): declared per instruction, parsed and validated.

Like BuildKit's ``BFlags``: an unknown flag, a duplicate of a single-valued
flag, a boolean flag with a value other than true/false, and a valued flag
without a value are errors, reported at the flag's position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from builder.frontend.errors import DockerfileError


class FlagKind(Enum):
    BOOL = "bool"
    STRING = "string"
    LIST = "list"  # may repeat; values are collected in order


@dataclass(frozen=True)
class FlagSpec:
    name: str
    kind: FlagKind = FlagKind.STRING
    default: object = None


@dataclass
class ParsedFlags:
    values: dict[str, object] = field(default_factory=dict)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def get(self, name: str, default: object = None) -> object:
        return self.values.get(name, default)


def parse_flags(
    keyword: str,
    raw_flags: list[str],
    positions: list[tuple[int, int]],
    specs: tuple[FlagSpec, ...],
) -> ParsedFlags:
    """Check ``raw_flags`` (``--name=value`` strings) against ``specs``."""
    by_name = {s.name: s for s in specs}
    out = ParsedFlags()
    for spec in specs:
        if spec.kind is FlagKind.LIST:
            out.values[spec.name] = []
        elif spec.default is not None:
            out.values[spec.name] = spec.default
    seen: set[str] = set()
    for i, raw in enumerate(raw_flags):
        line, col = positions[i] if i < len(positions) else (0, 0)
        if not raw.startswith("--"):
            raise DockerfileError(f"invalid flag {raw!r} for {keyword}", line=line, col=col)
        body = raw[2:]
        name, has_value, value = body.partition("=")
        spec = by_name.get(name)
        if spec is None:
            known = ", ".join(f"--{s.name}" for s in specs) or "none"
            raise DockerfileError(
                f"unknown flag: --{name} for {keyword}", line=line, col=col,
                hint=f"{keyword} accepts: {known}",
            )
        if spec.kind is not FlagKind.LIST and name in seen:
            raise DockerfileError(f"duplicate flag specified: --{name}", line=line, col=col,
                                  hint="give each flag once")
        seen.add(name)
        out.positions.setdefault(name, (line, col))
        if spec.kind is FlagKind.BOOL:
            if not has_value:
                out.values[name] = True
            elif value.lower() in ("true", "false"):
                out.values[name] = value.lower() == "true"
            else:
                raise DockerfileError(
                    f"expecting boolean value for flag --{name}, not: {value}", line=line, col=col,
                    hint=f"write --{name} or --{name}=true|false",
                )
            continue
        if not has_value:
            raise DockerfileError(f"missing a value on flag: --{name}", line=line, col=col,
                                  hint=f"write --{name}=<value>")
        if spec.kind is FlagKind.LIST:
            out.values[name].append(value)  # type: ignore[union-attr]
        else:
            out.values[name] = value
    return out
