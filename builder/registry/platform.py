"""Platforms (``linux/amd64``, ``linux/arm64/v8``): parsing, the host's, and choosing from an index."""
from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from builder.registry.errors import NoMatchingPlatformError
from builder.errors import UsageError

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalized(self) -> "Platform":
        # arm64's only variant is v8, so "linux/arm64" and "linux/arm64/v8" are the same.
        if self.architecture == "arm64" and self.variant == "v8":
            return Platform(self.os, "arm64", None)
        if self.architecture == "arm" and self.variant is None:
            return Platform(self.os, "arm", "v7")
        return self


def parse_platform(text: str) -> Platform:
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(parts[1], parts[1])
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else None)


def host_platform() -> Platform:
    arch, variant = _MACHINE_TO_ARCH.get(_platform.machine().lower(), (_platform.machine().lower(), None))
    return Platform("linux", arch, variant)


def platform_of(entry: dict) -> Platform | None:
    p = entry.get("platform")
    if not isinstance(p, dict) or not p.get("os") or not p.get("architecture"):
        return None
    return Platform(str(p["os"]), str(p["architecture"]), p.get("variant") or None)


def select_manifest(entries: list[dict], want: Platform, where: str) -> dict:
    """The index entry for ``want``; entries without a platform (attestations) never match."""
    target = want.normalized()
    for entry in entries:
        p = platform_of(entry)
        if p is None or p.os != target.os:
            continue
        got = p.normalized()
        if got.architecture == target.architecture and (target.variant is None or got.variant == target.variant):
            return entry
    available = sorted({str(p) for p in map(platform_of, entries) if p})
    raise NoMatchingPlatformError(
        f"{where} has no image for {want} (available: {', '.join(available) or 'none'})"
    )
