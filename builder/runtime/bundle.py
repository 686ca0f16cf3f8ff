"""Reading a bundle's config.json: the decoded document, or one clear ConfigError.

Kept apart from ``config`` (which validates the document) so that ``pybuild-runc``
can read the few fields it needs first — where the container's cgroups go — before
the rest of the runtime is imported.
"""
from __future__ import annotations

import json
import os

from .errors import ConfigError

MAX_CONFIG_BYTES = 16 << 20   # a real config.json is a few KiB


def read_config(bundle: str) -> dict:
    path = os.path.join(bundle, "config.json")
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; refusing to read it")
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config.json in bundle {bundle}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None


def cgroups_path(doc: object) -> str | None:
    """linux.cgroupsPath as ``config.parse`` will read it; None when the document will not get
    that far, or asks for a new cgroup namespace (the stage-1 child joins first then)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("linux"), dict):
        return None
    linux = doc["linux"]
    namespaces = linux.get("namespaces")
    if not isinstance(namespaces, list) or any(
            isinstance(ns, dict) and ns.get("type") == "cgroup" and not ns.get("path") for ns in namespaces):
        return None
    return str(linux.get("cgroupsPath") or "")
