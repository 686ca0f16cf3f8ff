"""Registry settings beyond the command line: ``<state root>/registries.json``.

    {"insecure-registries": ["registry.lan:5000"], "ca-cert": "/etc/ssl/private-ca.pem",
     "read-timeout": 30}

(the first two key names follow docker's daemon.json). Flags add to what the file says.
``read-timeout`` (seconds, default 120) is how long a registry may send nothing before the
request is retried (a stalled download resumes with ``Range``).
"""
from __future__ import annotations

import json
from pathlib import Path

from builder.registry.errors import RegistryError
from builder.registry.transport import RegistryOptions

CONFIG_NAME = "registries.json"


def load_registry_options(root: Path | None, insecure: list[str] = (), ca_cert: str | None = None) -> RegistryOptions:
    data: dict = {}
    if root is not None:
        path = Path(root) / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{path} must hold a JSON object")
    listed = data.get("insecure-registries") or []
    if not isinstance(listed, list) or not all(isinstance(h, str) for h in listed):
        raise RegistryError(f"{CONFIG_NAME}: 'insecure-registries' must be a list of host[:port] strings")
    ca = ca_cert or data.get("ca-cert")
    if ca is not None and not Path(ca).is_file():
        raise RegistryError(f"CA certificate {ca} not found")
    timeout = data.get("read-timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise RegistryError(f"{CONFIG_NAME}: 'read-timeout' must be a number of seconds above 0")
    extra = {"read_timeout": float(timeout)} if timeout is not None else {}
    return RegistryOptions(insecure_registries=frozenset([*listed, *insecure]), ca_cert=ca, **extra)
