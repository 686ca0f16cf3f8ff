"""Cache keys for build steps, and why a key missed.

A step's ``CacheKey`` is the sha256 of its ``KeyInputs``: the parent step's
key, the instruction after expansion, the build args and environment the step
can see, the content digest of what it reads (COPY/ADD sources, other stages'
results, the base image's digest) and the platform. Never mtimes, never a
secret's value.

``explain_miss`` compares a step's inputs with those recorded by the last
build of the same step and says what changed, in the order a user would look
for it: the parent, the instruction text, a build arg, the files.

Pure functions and frozen dataclasses only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping

KEY_VERSION = "pybuild.cachekey/v1"


@dataclass(frozen=True)
class KeyInputs:
    """Everything a step's result depends on."""

    op: str  # "from", "run", "copy", "add", "meta"
    instruction: str  # canonical text of the expanded instruction
    parent: str | None = None  # the parent step's cache key
    args: tuple[tuple[str, str], ...] = ()  # build args the step sees (sorted)
    env: tuple[tuple[str, str], ...] = ()  # environment the step runs with (RUN)
    sources: str | None = None  # digest of the selected sources / base image / other stage
    platform: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # op-specific: mount sources, --from stage keys
    # Not hashed: what the explanation of a miss needs to name changed files.
    files: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def canonical(self) -> bytes:
        body = {
            "v": KEY_VERSION, "op": self.op, "instruction": self.instruction, "parent": self.parent,
            "args": list(self.args), "env": list(self.env), "sources": self.sources,
            "platform": self.platform, "extra": list(self.extra),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def to_json(self) -> dict:
        return {"op": self.op, "instruction": self.instruction, "parent": self.parent,
                "args": dict(self.args), "env": dict(self.env), "sources": self.sources,
                "platform": self.platform, "extra": dict(self.extra), "files": dict(self.files)}

    @classmethod
    def from_json(cls, data: Mapping) -> "KeyInputs":
        def pairs(v: object) -> tuple[tuple[str, str], ...]:
            return tuple(sorted((str(k), str(x)) for k, x in dict(v or {}).items()))

        return cls(op=str(data["op"]), instruction=str(data["instruction"]), parent=data.get("parent"),
                   args=pairs(data.get("args")), env=pairs(data.get("env")),
                   sources=data.get("sources"), platform=str(data.get("platform", "")),
                   extra=pairs(data.get("extra")), files=dict(data.get("files") or {}))


def sorted_pairs(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))


def cache_key(inputs: KeyInputs) -> str:
    """The step's cache key: ``sha256:<hex>`` over its canonical inputs."""
    return "sha256:" + hashlib.sha256(inputs.canonical()).hexdigest()


@dataclass(frozen=True)
class MissReason:
    """Why a step was not found in the cache: a machine-readable kind and a sentence."""

    kind: str  # new | parent | instruction | build_arg | env | files | base_image | source_stage | platform | no_cache | other
    message: str
    details: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "details": dict(self.details)}


def _diff_pairs(old: tuple[tuple[str, str], ...], new: tuple[tuple[str, str], ...]) -> list[tuple[str, str | None, str | None]]:
    a, b = dict(old), dict(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _fmt(v: str | None) -> str:
    return "(unset)" if v is None else repr(v)


def diff_files(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, list[str]]:
    """Paths added, removed and changed between two path -> digest maps."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(p for p in set(old) & set(new) if old[p] != new[p]),
    }


def _files_sentence(diff: dict[str, list[str]], limit: int = 3) -> str:
    paths = diff["changed"] + diff["added"] + diff["removed"]
    shown = ", ".join(paths[:limit])
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    n = len(paths)
    return f"{n} file{'s' if n != 1 else ''} changed: {shown}{more}"


def explain_miss(
    current: KeyInputs,
    previous: KeyInputs | None,
    *,
    parent_step: str | None = None,
    parent_missed: bool = False,
) -> MissReason:
    """Why ``current`` missed, given what the last build of this step used.

    ``parent_step`` names the parent (e.g. ``Dockerfile:3 RUN make``) for the
    sentence when the parent itself missed.
    """
    if previous is None:
        return MissReason("new", "no earlier build of this step")
    if current.parent != previous.parent:
        name = f" ({parent_step})" if parent_step else ""
        what = "missed" if parent_missed else "gave a different result"
        return MissReason("parent", f"the parent step {what}{name}",
                          {"parent": parent_step, "old": previous.parent, "new": current.parent})
    if current.op == "from" and current.sources != previous.sources:
        return MissReason("base_image", f"the base image changed ({previous.sources} → {current.sources})",
                          {"old": previous.sources, "new": current.sources})
    if current.instruction != previous.instruction:
        return MissReason("instruction", f"the instruction changed: {previous.instruction!r} → "
                          f"{current.instruction!r}",
                          {"old": previous.instruction, "new": current.instruction})
    changed_args = _diff_pairs(previous.args, current.args)
    if changed_args:
        name, old, new = changed_args[0]
        others = f" (and {len(changed_args) - 1} more)" if len(changed_args) > 1 else ""
        return MissReason("build_arg", f"build-arg {name} changed: {_fmt(old)} → {_fmt(new)}{others}",
                          {"args": [{"name": n, "old": o, "new": v} for n, o, v in changed_args]})
    changed_env = _diff_pairs(previous.env, current.env)
    if changed_env:
        name, old, new = changed_env[0]
        return MissReason("env", f"environment variable {name} changed: {_fmt(old)} → {_fmt(new)}",
                          {"env": [{"name": n, "old": o, "new": v} for n, o, v in changed_env]})
    if current.sources != previous.sources:
        if current.files or previous.files:
            diff = diff_files(previous.files, current.files)
            if any(diff.values()):
                return MissReason("files", _files_sentence(diff), diff)
        origin = dict(current.extra).get("from")
        if origin:
            return MissReason("source_stage", f"the {origin} it copies from changed",
                              {"from": origin, "old": previous.sources, "new": current.sources})
        return MissReason("files", "the content it reads changed",
                          {"old": previous.sources, "new": current.sources})
    if current.extra != previous.extra:
        changed = _diff_pairs(previous.extra, current.extra)
        return MissReason("source_stage", "a stage or mount it reads changed: " +
                          ", ".join(k for k, _, _ in changed), {"changed": [k for k, _, _ in changed]})
    if current.platform != previous.platform:
        return MissReason("platform", f"the platform changed: {previous.platform} → {current.platform}",
                          {"old": previous.platform, "new": current.platform})
    return MissReason("other", "the recorded result is no longer in the store")
