"""``--cache-to`` / ``--cache-from`` values, parsed like ``docker buildx build``'s.

    type=registry,ref=REG/REPO:TAG[,mode=min|max][,merge=true|false][,ignore-error=true]
        [,compression=gzip|zstd][,compression-level=N][,force-compression=true]
        [,max-age=DURATION][,max-records=N][,oci-mediatypes=true][,image-manifest=true]
    type=local,dest=DIR[,tag=T][, the same export options]   (export)
    type=local,src=DIR[,tag=T]                                 (import)
    type=inline                    (export: metadata in the pushed image's config)
    REF                            shorthand for type=registry,ref=REF
"""
from __future__ import annotations

from dataclasses import dataclass, field

from builder.cache.format import MAX_RECORDS  # a bigger document would not import
from builder.errors import UsageError

TYPES = ("registry", "local", "inline")
_EXPORT = {"mode", "compression", "compression-level", "force-compression", "merge", "ignore-error",
           "max-age", "max-records", "oci-mediatypes", "image-manifest"}
_KNOWN = {  # (type, export?) -> accepted attributes
    ("registry", True): {"ref"} | _EXPORT,
    ("registry", False): {"ref"},
    ("local", True): {"dest", "tag"} | _EXPORT,
    ("local", False): {"src", "tag"},
    ("inline", True): {"mode", "ignore-error"},
    ("inline", False): set(),
}
_BOOLS = ("merge", "ignore-error", "force-compression", "oci-mediatypes", "image-manifest")
LEVELS = {"gzip": (0, 9), "zstd": (1, 22)}  # what builder.image.compress accepts
DEFAULT_MAX_AGE = 168 * 3600.0  # a week: records no build exported for that long are dropped


@dataclass(frozen=True)
class CacheSpec:
    type: str
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.attrs.get("mode", "min")

    @property
    def merge(self) -> bool:
        return _flag(self.attrs, "merge", True)

    @property
    def ignore_error(self) -> bool:
        return _flag(self.attrs, "ignore-error", False)

    @property
    def compression(self) -> str | None:
        """``gzip`` or ``zstd``; None keeps every layer as the store holds it."""
        return self.attrs.get("compression")

    @property
    def compression_level(self) -> int | None:
        value = self.attrs.get("compression-level")
        return None if value is None else int(value)

    @property
    def force_compression(self) -> bool:
        return _flag(self.attrs, "force-compression", False)

    @property
    def max_age(self) -> float:
        """Seconds: merged records not exported within this are dropped."""
        value = self.attrs.get("max-age")
        return DEFAULT_MAX_AGE if value is None else _duration(value)

    @property
    def max_records(self) -> int:
        value = self.attrs.get("max-records")
        return MAX_RECORDS if value is None else int(value)

    def describe(self) -> str:
        where = self.attrs.get("ref") or self.attrs.get("dest") or self.attrs.get("src")
        return f"{self.type} cache {where}" if where else f"{self.type} cache"


def _flag(attrs: dict[str, str], name: str, default: bool) -> bool:
    value = attrs.get(name)
    return default if value is None else value.lower() == "true"


def _duration(text: str) -> float:
    from builder.commands.system import parse_duration

    return parse_duration(text)


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
    for name in _BOOLS:
        if name in attrs and attrs[name].lower() not in ("true", "false"):
            raise UsageError(f"{flag} {name}={attrs[name]}: expected true or false")
    _check_compression(flag, spec)
    _check_pruning(flag, spec)
    for name in ("oci-mediatypes", "image-manifest"):
        # The cache is always an OCI image manifest (what buildx writes by default): say so
        # rather than write something else than asked.
        if name in attrs and not _flag(attrs, name, True):
            raise UsageError(f"{flag} {name}=false is not supported: pybuild writes the cache as an OCI "
                             "image manifest")
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


def _check_compression(flag: str, spec: CacheSpec) -> None:
    attrs = spec.attrs
    if spec.compression is not None and spec.compression not in LEVELS:
        raise UsageError(f"{flag} compression={spec.compression} is not supported (use gzip or zstd)")
    if spec.compression is None:
        for name in ("compression-level", "force-compression"):
            if name in attrs:
                raise UsageError(f"{flag} {name} needs compression=gzip or compression=zstd")
        return
    text = attrs.get("compression-level")
    if text is None:
        return
    low, high = LEVELS[spec.compression]
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"{flag} compression-level={text}: {spec.compression} levels are {low}-{high}")


def _check_pruning(flag: str, spec: CacheSpec) -> None:
    text = spec.attrs.get("max-age")
    if text is not None:
        try:
            seconds = _duration(text)
        except UsageError as exc:
            raise UsageError(f"{flag} max-age={text}: {exc}") from None
        if seconds <= 0:
            raise UsageError(f"{flag} max-age={text}: must be more than 0 (merge=false replaces the records)")
    text = spec.attrs.get("max-records")
    if text is not None and (not text.isdigit() or not 1 <= int(text) <= MAX_RECORDS):
        raise UsageError(f"{flag} max-records={text}: expected a whole number from 1 to {MAX_RECORDS}")
