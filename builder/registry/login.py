"""Checking credentials against a registry before ``pybuild login`` stores them."""
from __future__ import annotations

from dataclasses import replace

from builder.registry.credentials import Credentials
from builder.registry.errors import AuthenticationError
from builder.registry.transport import RegistryOptions, Transport


def normalize_registry_host(text: str) -> str:
    """``https://reg.example.com/v2/`` → ``reg.example.com``; Docker Hub spellings → ``docker.io``."""
    host = text.strip().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if host in ("", "index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    return host


def verify_login(registry: str, creds: Credentials, options: RegistryOptions | None = None) -> None:
    """Raise :class:`AuthenticationError` unless ``registry`` accepts ``creds``."""
    api_host = "registry-1.docker.io" if registry == "docker.io" else registry
    transport = Transport(api_host, replace(options or RegistryOptions(), credentials=creds))
    try:
        transport.base_url()  # probes /v2/ and learns the challenge
        challenge = transport.auth.challenge
        if challenge is None:
            return  # the registry wants no authentication at all
        if challenge.scheme == "bearer":
            # A token with no scope is what docker asks for at login: the token server checks the password.
            token = transport.auth.token(())
            headers = {"Authorization": f"Bearer {token}"}
        else:
            headers = {"Authorization": transport.auth.header_for(()) or ""}
        resp = transport.session.get(
            transport.url("/v2/"), headers=headers, timeout=transport.timeout,
            verify=transport.verify, allow_redirects=False,
        )
        resp.close()
        if resp.status_code in (401, 403):
            raise AuthenticationError(f"{registry}: login refused (HTTP {resp.status_code})")
    finally:
        transport.close()
