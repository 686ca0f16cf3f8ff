"""The OCI image data model: platforms, descriptors, manifests, indexes and image configs.

Every type reads itself from JSON (``from_json``), checking shapes and raising
``InvalidImageError`` on anything malformed, and writes canonical JSON
(``to_json``): compact, keys in the order docker/BuildKit emit them (Go struct
order, map keys sorted), empty optional fields left out, ``<>&`` escaped the
way Go does. Keys this model does not know are kept in ``extra`` and written
back, so configs from other tools survive a round trip.
"""
from __future__ import annotations

import json
import platform as _host
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from builder.image import mediatypes as mt
from builder.image.digest import parse_digest, sha256_digest
from builder.image.errors import InvalidImageError, InvalidPlatformError

__all__ = [
    "Platform", "Descriptor", "Manifest", "Index", "ImageConfig", "ContainerConfig",
    "Healthcheck", "History", "RootFS", "sha256_digest", "parse_digest", "format_created",
    "canonical_json", "parse_json_object",
]


# ---------------------------------------------------------------- JSON helpers

def canonical_json(obj: Any) -> bytes:
    """Compact JSON with Go's HTML escaping, so our bytes match what Go tools write."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # These characters only ever occur inside strings, so replacing them is safe.
    for char, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                      ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, esc)
    return text.encode("utf-8")


def parse_json_object(data: bytes | str, what: str) -> dict:
    """Decode ``data`` as one JSON object or raise ``InvalidImageError`` naming ``what``."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidImageError(f"{what} is not valid JSON: {exc}") from None
    return _obj(obj, what)


def _obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidImageError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _str(d: dict, key: str, what: str, *, required: bool = False) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise InvalidImageError(f"{what}: missing required field {key!r}")
        return None
    if not isinstance(value, str):
        raise InvalidImageError(f"{what}: field {key!r} must be a string")
    return value


def _int(d: dict, key: str, what: str, *, required: bool = False) -> int | None:
    value = d.get(key)
    if value is None:
        if required:
            raise InvalidImageError(f"{what}: missing required field {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidImageError(f"{what}: field {key!r} must be an integer")
    return value


def _bool(d: dict, key: str, what: str) -> bool | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidImageError(f"{what}: field {key!r} must be true or false")
    return value


def _str_list(d: dict, key: str, what: str) -> list[str] | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidImageError(f"{what}: field {key!r} must be a list of strings")
    return list(value)


def _str_map(d: dict, key: str, what: str) -> dict[str, str] | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidImageError(f"{what}: field {key!r} must be an object of strings")
    return dict(value)


def _key_set(d: dict, key: str, what: str) -> list[str] | None:
    """A Go ``map[string]struct{}`` (ExposedPorts, Volumes) as a sorted list of its keys."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidImageError(f"{what}: field {key!r} must be an object")
    return sorted(value)


def _extra(d: dict, known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


def _emit(pairs: list[tuple[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """Build an ordered dict from (key, value) pairs, dropping empty ones, then sorted extras."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if value is None or value is False or value == [] or value == {} or value == "":
            continue
        out[key] = value
    for key in sorted(extra):
        if key not in out:
            out[key] = extra[key]
    return out


def format_created(epoch: float | int | None = None) -> str:
    """An RFC 3339 UTC timestamp as image configs carry it (now when ``epoch`` is None)."""
    when = datetime.now(timezone.utc) if epoch is None else datetime.fromtimestamp(epoch, timezone.utc)
    if when.microsecond:
        text = when.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0")
    else:
        text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return text + "Z"


# ---------------------------------------------------------------- Platform

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
    "mips64": ("mips64", None), "loongarch64": ("loong64", None),
}
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "i386": "386"}


@dataclass(frozen=True)
class Platform:
    """Where an image runs: ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.os_features is not None and not isinstance(self.os_features, tuple):
            object.__setattr__(self, "os_features", tuple(self.os_features))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """``OS/ARCH[/VARIANT]``; common architecture aliases (x86_64, aarch64) are normalised."""
        parts = text.strip().lower().split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(p and p.replace("_", "").replace("-", "").replace(".", "").isalnum() for p in parts):
            raise InvalidPlatformError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> "Platform":
        machine = _host.machine().lower()
        arch, variant = _MACHINE_TO_ARCH.get(machine, (machine, None))
        return cls("linux", arch, variant)

    def normalized(self) -> "Platform":
        """The canonical spelling for comparisons: arm64/v8 → arm64, arm → arm/v7."""
        variant = self.variant
        if self.architecture == "arm64" and variant == "v8":
            variant = None
        elif self.architecture == "arm" and variant is None:
            variant = "v7"
        return Platform(self.os, self.architecture, variant, self.os_version, self.os_features)

    def matches(self, other: "Platform") -> bool:
        """Same os, architecture and (normalised) variant; os.version/features are not compared."""
        a, b = self.normalized(), other.normalized()
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def to_dict(self) -> dict[str, Any]:
        return _emit([
            ("architecture", self.architecture),
            ("os", self.os),
            ("os.version", self.os_version),
            ("os.features", list(self.os_features) if self.os_features else None),
            ("variant", self.variant),
        ], {})

    @classmethod
    def from_dict(cls, d: Any, what: str = "platform") -> "Platform":
        d = _obj(d, what)
        return cls(
            os=_str(d, "os", what, required=True),
            architecture=_str(d, "architecture", what, required=True),
            variant=_str(d, "variant", what) or None,
            os_version=_str(d, "os.version", what) or None,
            os_features=tuple(_str_list(d, "os.features", what) or ()) or None,
        )


# ---------------------------------------------------------------- Descriptor

_DESCRIPTOR_KEYS = frozenset({"mediaType", "digest", "size", "urls", "annotations", "platform", "artifactType"})


@dataclass
class Descriptor:
    """A pointer to content: its media type, digest and size (plus optional metadata)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    urls: list[str] | None = None
    artifact_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, media_type: str, data: bytes, **kwargs: Any) -> "Descriptor":
        """The descriptor of ``data`` (digest and size computed here)."""
        return cls(media_type, sha256_digest(data), len(data), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return _emit([
            ("mediaType", self.media_type),
            ("digest", self.digest),
            ("size", self.size),
            ("urls", self.urls),
            ("annotations", _sorted_map(self.annotations)),
            ("platform", self.platform.to_dict() if self.platform else None),
            ("artifactType", self.artifact_type),
        ], self.extra)

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, what: str = "descriptor") -> "Descriptor":
        d = _obj(d, what)
        media_type = _str(d, "mediaType", what, required=True)
        digest = d.get("digest")
        if digest is None:
            raise InvalidImageError(f"{what}: missing required field 'digest'")
        parse_digest(digest)
        size = _int(d, "size", what, required=True)
        if size < 0:
            raise InvalidImageError(f"{what}: size must not be negative")
        platform = d.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=_str_map(d, "annotations", what),
            platform=Platform.from_dict(platform, f"{what} platform") if platform is not None else None,
            urls=_str_list(d, "urls", what),
            artifact_type=_str(d, "artifactType", what),
            extra=_extra(d, _DESCRIPTOR_KEYS),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> "Descriptor":
        return cls.from_dict(parse_json_object(data, "descriptor"))


def _sorted_map(m: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: m[k] for k in sorted(m)} if m else None


def _descriptor_list(d: dict, key: str, what: str) -> list[Descriptor]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidImageError(f"{what}: field {key!r} must be a list")
    return [Descriptor.from_dict(item, f"{what} {key}[{i}]") for i, item in enumerate(value)]


# ---------------------------------------------------------------- Manifest and Index

_MANIFEST_KEYS = frozenset({"schemaVersion", "mediaType", "artifactType", "config", "layers", "subject", "annotations"})
_INDEX_KEYS = frozenset({"schemaVersion", "mediaType", "artifactType", "manifests", "subject", "annotations"})


def _check_schema(d: dict, what: str) -> None:
    version = d.get("schemaVersion")
    if version == 1 or d.get("mediaType") == mt.DOCKER_MANIFEST_V1_SIGNED:
        raise InvalidImageError(f"{what}: Docker schema 1 manifests are not supported (deprecated since 2017)")
    if version != 2 or isinstance(version, bool):
        raise InvalidImageError(f"{what}: schemaVersion must be 2, got {version!r}")


class _Document:
    """What manifests and indexes share: canonical JSON and their own descriptor."""

    media_type: str

    def to_dict(self) -> dict:  # pragma: no cover - each document defines it
        raise NotImplementedError

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    def descriptor(self, **kwargs: Any) -> Descriptor:
        """The descriptor of this document's canonical JSON."""
        return Descriptor.of(self.media_type, self.to_json(), **kwargs)


def _finish_document(doc, out: dict) -> dict:
    """The fields after the content: subject, annotations, then unknown keys kept as read."""
    if doc.subject:
        out["subject"] = doc.subject.to_dict()
    if doc.annotations:
        out["annotations"] = _sorted_map(doc.annotations)
    for key in sorted(doc.extra):
        out.setdefault(key, doc.extra[key])
    return out


@dataclass
class Manifest(_Document):
    """An image manifest: one config and an ordered list of layers."""

    config: Descriptor
    layers: list[Descriptor]
    media_type: str = mt.OCI_MANIFEST
    annotations: dict[str, str] | None = None
    schema_version: int = 2
    subject: Descriptor | None = None
    artifact_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_dict()
        out["layers"] = [layer.to_dict() for layer in self.layers]  # required even when empty
        return _finish_document(self, out)

    @classmethod
    def from_dict(cls, d: Any, what: str = "manifest") -> "Manifest":
        d = _obj(d, what)
        _check_schema(d, what)
        media_type = _str(d, "mediaType", what)
        if media_type is None:
            if "manifests" in d:
                raise InvalidImageError(f"{what}: this is an image index, not a manifest")
            media_type = mt.OCI_MANIFEST
        elif media_type not in mt.MANIFESTS:
            raise InvalidImageError(f"{what}: mediaType {media_type!r} is not an image manifest")
        if "config" not in d:
            raise InvalidImageError(f"{what}: missing required field 'config'")
        if not isinstance(d.get("layers"), list):
            raise InvalidImageError(f"{what}: field 'layers' must be a list")
        subject = d.get("subject")
        return cls(
            config=Descriptor.from_dict(d["config"], f"{what} config"),
            layers=_descriptor_list(d, "layers", what),
            media_type=media_type,
            annotations=_str_map(d, "annotations", what),
            schema_version=2,
            subject=Descriptor.from_dict(subject, f"{what} subject") if subject is not None else None,
            artifact_type=_str(d, "artifactType", what),
            extra=_extra(d, _MANIFEST_KEYS),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> "Manifest":
        return cls.from_dict(parse_json_object(data, "image manifest"), "image manifest")


@dataclass
class Index(_Document):
    """An image index (or Docker manifest list): manifests for several platforms."""

    manifests: list[Descriptor]
    media_type: str = mt.OCI_INDEX
    annotations: dict[str, str] | None = None
    schema_version: int = 2
    subject: Descriptor | None = None
    artifact_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [m.to_dict() for m in self.manifests]
        return _finish_document(self, out)

    def for_platform(self, want: Platform) -> Descriptor | None:
        """The first manifest entry whose platform matches ``want`` (None when there is none)."""
        for entry in self.manifests:
            if entry.platform is not None and entry.platform.matches(want):
                return entry
        return None

    @classmethod
    def from_dict(cls, d: Any, what: str = "image index") -> "Index":
        d = _obj(d, what)
        _check_schema(d, what)
        media_type = _str(d, "mediaType", what)
        if media_type is None:
            if "config" in d or "layers" in d:
                raise InvalidImageError(f"{what}: this is an image manifest, not an index")
            media_type = mt.OCI_INDEX
        elif media_type not in mt.INDEXES:
            raise InvalidImageError(f"{what}: mediaType {media_type!r} is not an image index")
        if not isinstance(d.get("manifests"), list):
            raise InvalidImageError(f"{what}: field 'manifests' must be a list")
        subject = d.get("subject")
        return cls(
            manifests=_descriptor_list(d, "manifests", what),
            media_type=media_type,
            annotations=_str_map(d, "annotations", what),
            schema_version=2,
            subject=Descriptor.from_dict(subject, f"{what} subject") if subject is not None else None,
            artifact_type=_str(d, "artifactType", what),
            extra=_extra(d, _INDEX_KEYS),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> "Index":
        return cls.from_dict(parse_json_object(data, "image index"), "image index")


# ---------------------------------------------------------------- Image config

_HEALTH_KEYS = frozenset({"Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"})


@dataclass
class Healthcheck:
    """HEALTHCHECK: the test command and its timings in nanoseconds (0 = inherit the default)."""

    test: list[str] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _emit([
            ("Test", self.test),
            ("Interval", self.interval or None),
            ("Timeout", self.timeout or None),
            ("StartPeriod", self.start_period or None),
            ("StartInterval", self.start_interval or None),
            ("Retries", self.retries or None),
        ], self.extra)

    @classmethod
    def from_dict(cls, d: Any, what: str = "Healthcheck") -> "Healthcheck":
        d = _obj(d, what)
        return cls(
            test=_str_list(d, "Test", what),
            interval=_int(d, "Interval", what) or 0,
            timeout=_int(d, "Timeout", what) or 0,
            start_period=_int(d, "StartPeriod", what) or 0,
            start_interval=_int(d, "StartInterval", what) or 0,
            retries=_int(d, "Retries", what) or 0,
            extra=_extra(d, _HEALTH_KEYS),
        )


_CONTAINER_KEYS = frozenset({
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell",
})


@dataclass
class ContainerConfig:
    """The ``config`` section of an image config: how to run a container from the image.

    ``exposed_ports`` and ``volumes`` are the keys of the JSON maps (``"80/tcp"``, ``"/data"``).
    """

    user: str | None = None
    exposed_ports: list[str] | None = None
    env: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: list[str] | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    on_build: list[str] | None = None
    shell: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _emit([
            ("User", self.user),
            ("ExposedPorts", {p: {} for p in sorted(self.exposed_ports)} if self.exposed_ports else None),
            ("Env", self.env),
            ("Entrypoint", self.entrypoint),
            ("Cmd", self.cmd),
            ("Volumes", {v: {} for v in sorted(self.volumes)} if self.volumes else None),
            ("WorkingDir", self.working_dir),
            ("Labels", _sorted_map(self.labels)),
            ("StopSignal", self.stop_signal),
            ("ArgsEscaped", self.args_escaped),
            ("Healthcheck", self.healthcheck.to_dict() if self.healthcheck else None),
            ("OnBuild", self.on_build),
            ("Shell", self.shell),
        ], self.extra)

    def env_map(self) -> dict[str, str]:
        """``Env`` as a dict (later entries win, as in docker)."""
        out: dict[str, str] = {}
        for item in self.env or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, d: Any, what: str = "image config 'config'") -> "ContainerConfig":
        d = _obj(d, what)
        health = d.get("Healthcheck")
        return cls(
            user=_str(d, "User", what),
            exposed_ports=_key_set(d, "ExposedPorts", what),
            env=_str_list(d, "Env", what),
            entrypoint=_str_list(d, "Entrypoint", what),
            cmd=_str_list(d, "Cmd", what),
            volumes=_key_set(d, "Volumes", what),
            working_dir=_str(d, "WorkingDir", what),
            labels=_str_map(d, "Labels", what),
            stop_signal=_str(d, "StopSignal", what),
            args_escaped=bool(_bool(d, "ArgsEscaped", what)),
            healthcheck=Healthcheck.from_dict(health, f"{what} Healthcheck") if health is not None else None,
            on_build=_str_list(d, "OnBuild", what),
            shell=_str_list(d, "Shell", what),
            extra=_extra(d, _CONTAINER_KEYS),
        )


_HISTORY_KEYS = frozenset({"created", "created_by", "author", "comment", "empty_layer"})


@dataclass
class History:
    """One entry of an image's build history; ``empty_layer`` entries have no layer."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _emit([
            ("created", self.created),
            ("created_by", self.created_by),
            ("author", self.author),
            ("comment", self.comment),
            ("empty_layer", self.empty_layer),
        ], self.extra)

    @classmethod
    def from_dict(cls, d: Any, what: str = "history entry") -> "History":
        d = _obj(d, what)
        return cls(
            created=_str(d, "created", what),
            created_by=_str(d, "created_by", what),
            author=_str(d, "author", what),
            comment=_str(d, "comment", what),
            empty_layer=bool(_bool(d, "empty_layer", what)),
            extra=_extra(d, _HISTORY_KEYS),
        )


@dataclass
class RootFS:
    """The layers' uncompressed digests (diffIDs), bottom first."""

    diff_ids: list[str] = field(default_factory=list)
    type: str = "layers"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "diff_ids": list(self.diff_ids)}

    @classmethod
    def from_dict(cls, d: Any, what: str = "image config rootfs") -> "RootFS":
        d = _obj(d, what)
        kind = _str(d, "type", what, required=True)
        if kind != "layers":
            raise InvalidImageError(f"{what}: type must be 'layers', got {kind!r}")
        diff_ids = _str_list(d, "diff_ids", what) or []
        for diff_id in diff_ids:
            parse_digest(diff_id)
        return cls(diff_ids=diff_ids, type=kind)


_IMAGE_KEYS = frozenset({
    "created", "author", "architecture", "os", "os.version", "os.features", "variant",
    "config", "rootfs", "history",
})


@dataclass
class ImageConfig:
    """An image configuration: platform, run defaults, layer diffIDs and history."""

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None
    os_features: list[str] | None = None
    created: str | None = None
    author: str | None = None
    config: ContainerConfig = field(default_factory=ContainerConfig)
    rootfs: RootFS = field(default_factory=RootFS)
    history: list[History] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def diff_ids(self) -> list[str]:
        return self.rootfs.diff_ids

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version,
                        tuple(self.os_features) if self.os_features else None)

    @classmethod
    def for_platform(cls, platform: Platform, **kwargs: Any) -> "ImageConfig":
        return cls(architecture=platform.architecture, os=platform.os, variant=platform.variant,
                   os_version=platform.os_version,
                   os_features=list(platform.os_features) if platform.os_features else None, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = _emit([
            ("created", self.created),
            ("author", self.author),
            ("architecture", self.architecture),
            ("os", self.os),
            ("os.version", self.os_version),
            ("os.features", self.os_features),
            ("variant", self.variant),
        ], {})
        # config and rootfs are structs in Go: always present, even when empty.
        out["config"] = self.config.to_dict()
        out["rootfs"] = self.rootfs.to_dict()
        if self.history:
            out["history"] = [h.to_dict() for h in self.history]
        for key in sorted(self.extra):
            out.setdefault(key, self.extra[key])
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    def descriptor(self, media_type: str = mt.OCI_CONFIG) -> Descriptor:
        return Descriptor.of(media_type, self.to_json())

    @classmethod
    def from_dict(cls, d: Any, what: str = "image config") -> "ImageConfig":
        d = _obj(d, what)
        history = d.get("history")
        if history is not None and not isinstance(history, list):
            raise InvalidImageError(f"{what}: field 'history' must be a list")
        rootfs = d.get("rootfs")
        if rootfs is None:
            raise InvalidImageError(f"{what}: missing required field 'rootfs'")
        config = d.get("config")
        return cls(
            architecture=_str(d, "architecture", what, required=True),
            os=_str(d, "os", what, required=True),
            variant=_str(d, "variant", what) or None,
            os_version=_str(d, "os.version", what) or None,
            os_features=_str_list(d, "os.features", what) or None,
            created=_str(d, "created", what),
            author=_str(d, "author", what),
            config=ContainerConfig.from_dict(config, f"{what} 'config'") if config is not None else ContainerConfig(),
            rootfs=RootFS.from_dict(rootfs, f"{what} rootfs"),
            history=[History.from_dict(h, f"{what} history[{i}]") for i, h in enumerate(history or [])],
            extra=_extra(d, _IMAGE_KEYS),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> "ImageConfig":
        return cls.from_dict(parse_json_object(data, "image config"), "image config")
