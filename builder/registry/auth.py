"""Registry authentication: challenges, Basic, and the Bearer token flow.

A registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
(or ``Basic realm=...``). For Bearer we ask the realm for a token for the scopes we
need (with our credentials, if any, as Basic auth, or an OAuth2 refresh token when
the config holds an identity token), cache it per scope set until shortly before it
expires, and ask again when the registry rejects it.
"""
from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import requests

from builder.registry.credentials import Credentials
from builder.registry.errors import AuthenticationError, RegistryError

# Tokens without expires_in live 60 s per the token spec; refresh a little early.
DEFAULT_TOKEN_LIFETIME = 60.0
EXPIRY_MARGIN = 10.0

_PARAM_RE = re.compile(r'\s*([a-zA-Z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (quoted or bare values)."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


def repository_scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Per-registry auth state shared by all threads of one transport."""

    def __init__(
        self,
        registry: str,
        credentials: Callable[[], Credentials | None],
        session: requests.Session,
        verify: bool | str = True,
        timeout: float = 30.0,
    ) -> None:
        self.registry = registry
        self._credentials_source = credentials
        self._credentials: Credentials | None = None
        self._credentials_loaded = False
        self._session = session
        self._verify = verify
        self._timeout = timeout
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = threading.Lock()
        self._fetch_locks: dict[tuple[str, ...], threading.Lock] = {}

    # -- credentials -------------------------------------------------------------------
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._credentials_loaded:
                self._credentials = self._credentials_source()
                self._credentials_loaded = True
            return self._credentials

    @property
    def challenge(self) -> Challenge | None:
        return self._challenge

    def remember_challenge(self, header: str) -> None:
        """Note the registry's challenge (from the ``/v2/`` probe) so requests can authenticate up front."""
        self._challenge = parse_challenge(header)

    def token(self, scopes: tuple[str, ...]) -> str:
        """A fresh Bearer token for ``scopes`` (empty: a login check); needs a bearer challenge."""
        if self._challenge is None or self._challenge.scheme != "bearer":
            raise AuthenticationError(f"{self.registry}: the registry did not ask for a bearer token")
        return self._fetch_token(self._challenge, scopes)

    def header_for(self, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header for a request needing ``scopes``, if we already know one."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials()
            return _basic(creds) if creds else None
        if challenge.scheme == "bearer":
            if not scopes:
                return None
            # One fetch per scope set at a time: parallel requests wait for it and share it.
            with self._fetch_lock(scopes):
                with self._lock:
                    token = self._tokens.get(_key(scopes))
                if token and token.expires_at > _now():
                    return f"Bearer {token.value}"
                return f"Bearer {self._fetch_token(challenge, scopes)}"
        return None

    def _fetch_lock(self, scopes: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault(_key(scopes), threading.Lock())

    def on_unauthorized(self, header: str | None, scopes: tuple[str, ...]) -> str:
        """Handle a 401: remember the challenge, drop a stale token, return a fresh header."""
        if not header:
            raise AuthenticationError(f"{self.registry}: unauthorized (no challenge given)")
        challenge = parse_challenge(header)
        if challenge.scheme not in ("basic", "bearer"):
            raise AuthenticationError(
                f"{self.registry}: unsupported authentication scheme {challenge.scheme!r}"
            )
        self._challenge = challenge
        if challenge.scheme == "basic":
            creds = self.credentials()
            if creds is None:
                raise AuthenticationError(f"{self.registry}: authentication required")
            return _basic(creds)
        # The registry may name the scope it wants; ask for ours plus that one.
        wanted = tuple(scopes)
        if challenge.params.get("scope"):
            wanted = tuple(dict.fromkeys(wanted + tuple(challenge.params["scope"].split(" "))))
        with self._lock:
            self._tokens.pop(_key(scopes), None)
        return f"Bearer {self._fetch_token(challenge, wanted, cache_as=scopes)}"

    # -- token flow --------------------------------------------------------------------
    def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...], cache_as: tuple[str, ...] | None = None
    ) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationError(f"{self.registry}: bearer challenge without a realm")
        service = challenge.params.get("service")
        creds = self.credentials()
        try:
            if creds and creds.identity_token:
                # OAuth2 refresh-token grant, as docker does with identity tokens.
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "pybuild",
                    "scope": " ".join(scopes),
                }
                if service:
                    form["service"] = service
                resp = self._session.post(realm, data=form, verify=self._verify, timeout=self._timeout)
            else:
                params: list[tuple[str, str]] = []
                if service:
                    params.append(("service", service))
                params.extend(("scope", s) for s in scopes)
                if creds:
                    params.append(("account", creds.username))
                headers = {"Authorization": _basic(creds)} if creds else {}
                resp = self._session.get(
                    realm, params=params, headers=headers, verify=self._verify, timeout=self._timeout
                )
        except requests.RequestException as exc:
            raise AuthenticationError(
                f"{self.registry}: token server {_host(realm)} unreachable ({type(exc).__name__})"
            ) from None
        if resp.status_code in (401, 403):
            raise AuthenticationError(
                f"{self.registry}: token server refused the credentials (HTTP {resp.status_code})"
            )
        if resp.status_code != 200:
            raise RegistryError(f"{self.registry}: token server answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise AuthenticationError(f"{self.registry}: token server sent no JSON") from None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not value or not isinstance(value, str):
            raise AuthenticationError(f"{self.registry}: token server answer has no token")
        try:
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        expires = _now() + max(lifetime - EXPIRY_MARGIN, lifetime / 2)
        token = _Token(value, expires)
        with self._lock:
            self._tokens[_key(cache_as if cache_as is not None else scopes)] = token
        return value


def _now() -> float:
    """The clock token expiry is measured on (a seam for tests)."""
    return time.monotonic()


def _key(scopes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(scopes)))


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url
