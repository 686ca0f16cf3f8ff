"""``--cache-to`` / ``--cache-from`` values, parsed like ``docker buildx build``'s.

    type=registry,ref=REG/REPO:TAG[,mode=min|max][,compression=gzip|zstd][,merge=true|false]
    type=local,dest=DIR            (export)    type=local,src=DIR   (import)
    type=inline                    (export: metadata in the pushed image's config)
    REF                            shorthand for type=registry,ref=REF
"""
from __future__ import annotations

from dataclasses import dataclass, field

from builder.errors import UsageError

TYPES = ("registry", "local", "inline")
_EXPORT = {"mode", "compression", "merge", "ignore-error"}
_KNOWN = {  # (type, export?) -> accepted attributes
    ("registry", True): {"ref"} | _EXPORT,
    ("registry", False): {"ref"},
    ("local", True): {"dest", "tag"} | _EXPORT,
    ("local", False): {"src", "tag"},
    ("inline", True): {"mode", "ignore-error"},
    ("inline", False): set(),
}


@dataclass(frozen=True)
class CacheSpec:
    type: str
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.attrs.get("mode", "min")

    @property
    def merge(self) -> bool:
        return self.attrs.get("merge", "true") != "false"

    @property
    def ignore_error(self) -> bool:
        return self.attrs.get("ignore-error", "false") == "true"

    @property
    def compression(self) -> str | None:
        return self.attrs.get("compression")

    def describe(self) -> str:
        where = self.attrs.get("ref") or self.attrs.get("dest") or self.attrs.get("src")
        return f"{self.type} cache {where}" if where else f"{self.type} cache"


def parse_cache_spec(value: str, *, export: bool) -> CacheSpec:
    """One flag value; a clear ``UsageError`` for anything unsupported."""
    flag = "--cache-to" if export else "--cache-from"
    value = value.strip()
    if not value:
        raise UsageError(f"{flag} needs a value, e.g. type=registry,ref=registry.example/app:cache")
    if "=" not in value:
        return CacheSpec("registry", {"ref": value})
    attrs: dict[str, str] = {}
    for part in value.split(","):
        key, eq, val = part.partition("=")
        if not eq:
            raise UsageError(f"invalid {flag} {value!r}: expected key=value pairs separated by commas")
        attrs[key.strip()] = val.strip()
    kind = attrs.pop("type", "registry")
    if kind not in TYPES:
        raise UsageError(f"{flag} type={kind} is not supported (use registry, local or inline)")
    unknown = sorted(set(attrs) - _KNOWN[(kind, export)])
    if unknown:
        raise UsageError(f"{flag} type={kind} does not take {', '.join(unknown)}")
    spec = CacheSpec(kind, attrs)
    if spec.mode not in ("min", "max"):
        raise UsageError(f"{flag} mode={spec.mode}: expected min or max")
    if spec.compression not in (None, "gzip"):
        # Records point at the layers the build made (gzip); converting them is not done yet.
        raise UsageError(f"{flag} compression={spec.compression} is not supported yet (the cache holds the "
                         "build's own gzip layers)")
    if kind == "registry" and not attrs.get("ref"):
        raise UsageError(f"{flag} type=registry needs ref=REGISTRY/REPO:TAG")
    if kind == "local":
        need = "dest" if export else "src"
        if not attrs.get(need):
            raise UsageError(f"{flag} type=local needs {need}=DIR")
    if kind == "inline" and not export:
        raise UsageError("--cache-from type=inline is not a source: give the image itself, "
                         "--cache-from type=registry,ref=IMAGE")
    if kind == "inline" and spec.mode == "max":
        raise UsageError("--cache-to type=inline supports mode=min only (the image holds the final stage's layers)")
    return spec
