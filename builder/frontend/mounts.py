"""``RUN --mount=...`` specifications: parsed, defaulted and validated.

The syntax is BuildKit's: comma-separated ``key=value`` fields (CSV quoting
allowed), ``type`` one of bind, cache, tmpfs, secret, ssh (bind by default).
Values may hold ``$VAR`` references, expanded by the caller's ``expand``
function before they are interpreted.
"""
from __future__ import annotations

import csv
import posixpath
from dataclasses import dataclass
from typing import Callable

from builder.frontend.errors import DockerfileError

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")

_KEY_ALIASES = {
    "dst": "target", "destination": "target", "src": "source",
    "ro": "readonly", "rw": "readwrite",
}
_BOOL_KEYS = ("readonly", "readwrite", "required")
_KEYS_BY_TYPE = {
    "bind": {"target", "source", "from", "readonly", "readwrite"},
    "cache": {"target", "source", "from", "readonly", "readwrite", "id", "sharing", "mode", "uid", "gid"},
    "tmpfs": {"target", "size"},
    "secret": {"target", "id", "required", "mode", "uid", "gid", "env"},
    "ssh": {"target", "id", "required", "mode", "uid", "gid"},
}


@dataclass(frozen=True)
class Mount:
    """One ``--mount`` of a RUN step, with BuildKit's defaults applied."""

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: int | None = None
    env: str = ""

    def to_json(self) -> dict:
        out: dict[str, object] = {"type": self.type}
        for key in ("target", "source", "id", "env"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.from_:
            out["from"] = self.from_
        if self.type in ("bind", "cache"):
            out["readonly"] = self.readonly
        if self.type == "cache":
            out["sharing"] = self.sharing
        if self.type in ("secret", "ssh"):
            out["required"] = self.required
        for key in ("mode", "uid", "gid", "size"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _parse_int(key: str, value: str, base: int = 10) -> int:
    try:
        n = int(value, base)
    except ValueError:
        raise DockerfileError(f"invalid value {value!r} for mount option {key}",
                              hint=f"{key} takes a number") from None
    if n < 0:
        raise DockerfileError(f"invalid value {value!r} for mount option {key}",
                              hint=f"{key} cannot be negative")
    return n


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2,
               "g": 1024**3, "gb": 1024**3, "t": 1024**4, "tb": 1024**4}


def _parse_size(value: str) -> int:
    v = value.strip().lower()
    num = v.rstrip("kmgtb")
    unit = v[len(num):]
    try:
        n = float(num)
    except ValueError:
        n = -1
    if n < 0 or unit not in _SIZE_UNITS:
        raise DockerfileError(f"invalid tmpfs size {value!r}", hint="use a size such as 64m or 1g")
    return int(n * _SIZE_UNITS[unit])


def parse_mount(spec: str, expand: Callable[[str], str] | None = None, index: int = 0) -> Mount:
    """Parse one ``--mount`` value. ``index`` numbers ssh mounts for their default target."""
    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as exc:
        raise DockerfileError(f"invalid --mount value {spec!r}: {exc}") from None
    values: dict[str, object] = {}
    for field in fields:
        key, has_value, value = field.partition("=")
        key = key.strip().lower()
        key = _KEY_ALIASES.get(key, key)
        if expand is not None and has_value:
            value = expand(value)
        if key in _BOOL_KEYS:
            if not has_value:
                values[key] = True
            elif value.lower() in ("true", "false"):
                values[key] = value.lower() == "true"
            else:
                raise DockerfileError(f"invalid value {value!r} for mount option {key}",
                                      hint=f"{key} takes true or false")
            continue
        if not has_value:
            raise DockerfileError(f"unexpected key '{key}' in '{field}'",
                                  hint="mount options are key=value pairs, e.g. type=cache,target=/root/.cache")
        values[key] = value
    mtype = str(values.pop("type", "bind")).lower()
    if mtype not in MOUNT_TYPES:
        raise DockerfileError(f"invalid --mount type {mtype!r}",
                              hint="type is one of " + ", ".join(MOUNT_TYPES))
    allowed = _KEYS_BY_TYPE[mtype]
    for key in values:
        if key not in allowed:
            raise DockerfileError(f"unexpected key '{key}' for a {mtype} mount",
                                  hint=f"a {mtype} mount takes: " + ", ".join(sorted(allowed | {'type'})))
    target = str(values.get("target", ""))
    mid = str(values.get("id", ""))
    if mtype == "secret":
        if not mid and target:
            mid = posixpath.basename(target)
        if not target and not values.get("env"):
            if not mid:
                raise DockerfileError("a secret mount needs an id or a target",
                                      hint="write --mount=type=secret,id=mysecret")
            target = "/run/secrets/" + mid
    elif mtype == "ssh":
        mid = mid or "default"
        target = target or f"/run/buildkit/ssh_agent.{index}"
    elif not target:
        raise DockerfileError(f"a {mtype} mount needs a target",
                              hint=f"write --mount=type={mtype},target=/path")
    if mtype == "cache" and not mid:
        mid = target
    readonly = mtype == "bind"
    if "readonly" in values:
        readonly = bool(values["readonly"])
    if "readwrite" in values:
        readonly = not values["readwrite"]
    sharing = str(values.get("sharing", "shared")).lower()
    if sharing not in SHARING_MODES:
        raise DockerfileError(f"unsupported sharing value {sharing!r}",
                              hint="sharing is one of shared, private, locked")
    mode = _parse_int("mode", str(values["mode"]), 8) if "mode" in values else None
    uid = _parse_int("uid", str(values["uid"])) if "uid" in values else None
    gid = _parse_int("gid", str(values["gid"])) if "gid" in values else None
    size = _parse_size(str(values["size"])) if "size" in values else None
    return Mount(
        type=mtype, target=target, source=str(values.get("source", "")),
        from_=str(values.get("from", "")), readonly=readonly, id=mid, sharing=sharing,
        mode=mode, uid=uid, gid=gid, required=bool(values.get("required", False)),
        size=size, env=str(values.get("env", "")),
    )
