"""Registry credentials in docker's ``config.json`` format.

Reads ``auths`` (base64 ``user:password`` or ``identitytoken``), ``credsStore`` and
``credHelpers`` (``docker-credential-NAME get/store/erase`` programs speaking JSON on
stdin/stdout). The file lives in ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``; ``pybuild login/logout`` write the same format so docker,
skopeo and pybuild share credentials. Secrets are never put into exception messages.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.registry.errors import CredentialsError

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    """A username and secret (password, or an identity/refresh token)."""

    username: str
    password: str
    identity_token: str | None = None

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"Credentials(username={self.username!r}, password=<redacted>)"


def config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def config_path() -> Path:
    return config_dir() / "config.json"


def config_key(registry: str) -> str:
    """The key docker uses in ``auths`` for a registry host."""
    if registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return DOCKER_HUB_CONFIG_KEY
    return registry


def _host_of_key(key: str) -> str:
    # Old files use "https://host/v1/" style keys.
    k = key.removeprefix("https://").removeprefix("http://")
    return k.split("/", 1)[0]


def load_config(path: Path | None = None) -> dict:
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"{path} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path} is not a JSON object")
    return data


def _save_config(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write-then-rename so a crash never leaves a half-written config; 0600 as docker does.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.json.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent="\t")
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _helper_for(data: dict, registry: str) -> str | None:
    helpers = data.get("credHelpers") or {}
    for key in (registry, config_key(registry)):
        if key in helpers:
            return helpers[key]
    return data.get("credsStore") or None


def _run_helper(helper: str, action: str, payload: str) -> str:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, action], input=payload, capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {program} not found in PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {program} {action} timed out") from None
    if proc.returncode != 0:
        out = (proc.stdout or proc.stderr).strip()
        if action == "get" and "credentials not found" in out.lower():
            return ""
        if action == "erase" and "not found" in out.lower():
            return ""
        # The helper's own message names the problem; it does not echo secrets back.
        raise CredentialsError(f"credential helper {program} {action} failed: {out.splitlines()[0] if out else proc.returncode}")
    return proc.stdout


def _from_auths(entry: dict) -> Credentials | None:
    if entry.get("identitytoken"):
        user = entry.get("username") or "<token>"
        return Credentials(user, "", identity_token=entry["identitytoken"])
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise CredentialsError("malformed 'auth' entry in docker config") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError("malformed 'auth' entry in docker config")
        return Credentials(user, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"])
    return None


def get_credentials(registry: str, path: Path | None = None) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]) from the docker config, or None."""
    data = load_config(path)
    helper = _helper_for(data, registry)
    if helper:
        out = _run_helper(helper, "get", config_key(registry))
        if out.strip():
            try:
                reply = json.loads(out)
                user, secret = reply["Username"], reply["Secret"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CredentialsError(f"credential helper {helper} gave a malformed answer") from None
            if user == "<token>":
                return Credentials(user, "", identity_token=secret)
            return Credentials(user, secret)
        # Fall through: docker also consults auths when the store has nothing.
    auths = data.get("auths") or {}
    want = config_key(registry)
    for key, entry in auths.items():
        if isinstance(entry, dict) and (key == want or _host_of_key(key) == registry):
            found = _from_auths(entry)
            if found:
                return found
    return None


def store_credentials(registry: str, creds: Credentials, path: Path | None = None) -> Path:
    """Save credentials as docker would: through the helper if one is configured, else ``auths``."""
    path = path or config_path()
    data = load_config(path)
    helper = _helper_for(data, registry)
    key = config_key(registry)
    if helper:
        _run_helper(helper, "store", json.dumps(
            {"ServerURL": key, "Username": creds.username, "Secret": creds.password}))
        data.setdefault("auths", {})[key] = {}
    else:
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        data.setdefault("auths", {})[key] = {"auth": token}
    _save_config(data, path)
    return path


def erase_credentials(registry: str, path: Path | None = None) -> bool:
    """Remove stored credentials for ``registry``; True when something was removed."""
    path = path or config_path()
    data = load_config(path)
    helper = _helper_for(data, registry)
    key = config_key(registry)
    removed = False
    if helper:
        _run_helper(helper, "erase", key)
        removed = True
    auths = data.get("auths") or {}
    for k in [k for k in auths if k == key or _host_of_key(k) == registry]:
        del auths[k]
        removed = True
    if removed:
        _save_config(data, path)
    return removed
