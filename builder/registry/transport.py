"""HTTP transport to one registry: scheme and TLS choice, auth, retries, redirects.

Every request goes through :meth:`Transport.request`, which
- picks https (verified, optionally with a private CA) or, only for loopback hosts and
  registries named insecure, plain http (found by probing ``/v2/``);
- adds the Authorization header for the request's scopes and answers a 401 challenge once;
- retries connection errors, 429 (honouring ``Retry-After``) and 5xx with exponential
  backoff and full jitter, as long as the body can be replayed;
- follows redirects itself, dropping the Authorization header whenever the next hop is
  another host (blob storage behind a redirect must never see registry credentials).
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from builder.registry.auth import Authenticator
from builder.registry.credentials import Credentials, get_credentials
from builder.registry.errors import (
    AuthenticationError,
    NotFoundError,
    RegistryError,
    RegistryUnreachableError,
)
from builder.registry.reference import is_loopback_host

log = logging.getLogger(__name__)

USER_AGENT = "pybuild/0.1 (+registry client)"
MAX_REDIRECTS = 10
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

Body = bytes | None | Callable[[], Iterable[bytes] | bytes]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: delay_n = uniform(0, min(cap, base * 2**n))."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))


@dataclass
class RegistryOptions:
    """How to reach registries: which may use plain http, which CA to trust, retries."""

    insecure_registries: frozenset[str] = frozenset()
    ca_cert: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    # Overrides the docker config lookup (tests, `pybuild login` checks).
    credentials: Credentials | None = None
    max_connections: int = 16

    def allows_plain_http(self, host: str) -> bool:
        return is_loopback_host(host) or host in self.insecure_registries


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def registry_error_message(resp: requests.Response) -> str:
    """The registry's own error text (``{"errors":[{"code","message"}]}``), if any."""
    try:
        body = json.loads(resp.content[:65536] or b"{}")
        errors = body.get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors[:3]]
        return "; ".join(p for p in parts if p)
    except (ValueError, AttributeError, TypeError):
        return ""


class Transport:
    """A connection to one registry host, safe to share between threads."""

    def __init__(self, host: str, options: RegistryOptions | None = None) -> None:
        self.host = host
        self.options = options or RegistryOptions()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=self.options.max_connections, max_retries=0
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Read proxy and CA settings from the environment once, not on every request
        # (requests' per-request environment lookups cost more than the request on loopback).
        self.session.trust_env = False
        self.session.proxies.update(requests.utils.get_environ_proxies(f"https://{host}/"))
        env_ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.verify: bool | str = self.options.ca_cert or env_ca or True
        if self.options.allows_plain_http(host):
            # Unverified TLS is what the user asked for here; urllib3's warning would be noise.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        creds = self.options.credentials
        source = (lambda: creds) if creds is not None else (lambda: get_credentials(host))
        self.auth = Authenticator(host, source, self.session, verify=self.verify)
        self._base_url: str | None = None
        self._lock = threading.Lock()

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.options.connect_timeout, self.options.read_timeout)

    # -- scheme ------------------------------------------------------------------------
    def base_url(self) -> str:
        with self._lock:
            if self._base_url is None:
                self._base_url = self._probe()
            return self._base_url

    def _probe(self) -> str:
        """Ping ``/v2/`` to choose the scheme and learn the auth challenge early.

        Where plain http is allowed (loopback, --insecure-registry) http is tried first and
        kept only if it gives a registry's answer (200 or 401); a TLS server answers plain
        http with 400 or a reset, and is then used over https without verification.
        """
        plain_ok = self.options.allows_plain_http(self.host)
        # (scheme, whether a connection error moves on to the next plan instead of retrying)
        plans = [("http", True), ("https", False)] if plain_ok else [("https", False)]
        last: Exception | None = None
        http_dropped = False
        for scheme, first_of_two in plans:
            url = f"{scheme}://{self.host}/v2/"
            verify = False if plain_ok else self.verify
            attempts = self.options.retry.attempts
            for attempt in range(attempts):
                try:
                    resp = self.session.get(url, timeout=self.timeout, verify=verify, allow_redirects=False)
                    resp.close()
                except requests.exceptions.SSLError as exc:
                    last = exc
                    if plain_ok and http_dropped and len(plans) == 2:
                        # Not TLS after all: the server speaks plain http and dropped that first
                        # connection (a flaky network); give http the retries.
                        plans.append(("http", False))
                    break
                except requests.RequestException as exc:
                    last = exc
                    if first_of_two:
                        http_dropped = True
                        break  # refused or reset over http: https gets the retries
                    if attempt + 1 < attempts:
                        time.sleep(self.options.retry.delay(attempt))
                    continue
                if first_of_two and resp.status_code == 400:
                    last = None
                    break  # how a TLS server answers plain http: try https
                if resp.status_code in RETRYABLE_STATUS and attempt + 1 < attempts:
                    time.sleep(self.options.retry.delay(attempt, parse_retry_after(resp.headers.get("Retry-After"))))
                    continue
                if resp.status_code == 401 and resp.headers.get("WWW-Authenticate"):
                    self.auth.remember_challenge(resp.headers["WWW-Authenticate"])
                if scheme == "https" and verify is False:
                    self.verify = False  # an insecure registry serving self-signed TLS
                return f"{scheme}://{self.host}"
        if isinstance(last, requests.exceptions.SSLError):
            raise RegistryUnreachableError(
                f"TLS handshake with {self.host} failed (certificate not trusted?)",
            ) from None
        raise RegistryUnreachableError(
            f"cannot reach registry {self.host} ({type(last).__name__ if last else 'no answer'})"
        ) from None

    def url(self, path: str) -> str:
        return urljoin(self.base_url() + "/", path.lstrip("/")) if not path.startswith(("http://", "https://")) else path

    # -- requests ----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        retry: bool = True,
        follow_redirects: bool = True,
    ) -> requests.Response:
        """Send one logical request; returns the final response (any status but 401/retryable)."""
        url = self.url(path)
        same_host = urlsplit(url).netloc == self.host
        policy = self.options.retry
        attempts = policy.attempts if retry else 1
        reauthed = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            # Credentials go only to the registry itself, never to a host an upload
            # Location or a redirect points at.
            auth_header = self.auth.header_for(scopes) if same_host else None
            if auth_header:
                hdrs["Authorization"] = auth_header
            data = body() if callable(body) else body
            try:
                resp = self._send_following_redirects(method, url, hdrs, data, stream, follow_redirects)
            except requests.RequestException as exc:
                attempt += 1
                if attempt >= attempts or not _replayable(body):
                    raise RegistryUnreachableError(
                        f"{method} {_safe_url(url)} failed after {attempt} attempt(s): {_describe(exc)}"
                    ) from None
                log.debug("retrying %s %s after %s", method, _safe_url(url), type(exc).__name__)
                time.sleep(policy.delay(attempt - 1))
                continue
            if resp.status_code == 401 and not reauthed and same_host:
                resp.close()
                reauthed = True
                self.auth.on_unauthorized(resp.headers.get("WWW-Authenticate"), scopes)
                if not _replayable(body):
                    raise AuthenticationError(f"{self.host}: unauthorized and the request body cannot be re-sent")
                continue
            if resp.status_code in RETRYABLE_STATUS and retry:
                attempt += 1
                if attempt < attempts and _replayable(body):
                    delay = policy.delay(attempt - 1, parse_retry_after(resp.headers.get("Retry-After")))
                    resp.close()
                    log.debug("retrying %s %s after HTTP %s (%.2fs)", method, _safe_url(url), resp.status_code, delay)
                    time.sleep(delay)
                    continue
            return resp

    def _send_following_redirects(
        self, method: str, url: str, headers: dict[str, str], data, stream: bool, follow: bool
    ) -> requests.Response:
        origin = urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            # The registry's own TLS settings (private CA, insecure) apply to it alone; blob
            # storage elsewhere is verified against the system's trust store.
            verify = self.verify if urlsplit(url).netloc == self.host else True
            resp = self.session.request(
                method, url, headers=headers, data=data, stream=stream,
                timeout=self.timeout, verify=verify, allow_redirects=False,
            )
            if not follow or resp.status_code not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
                return resp
            resp.close()
            url = urljoin(url, resp.headers["Location"])
            if urlsplit(url).netloc != origin and "Authorization" in headers:
                headers = {k: v for k, v in headers.items() if k != "Authorization"}
            if resp.status_code == 303:
                method, data = "GET", None
        raise RegistryError(f"too many redirects from {self.host}")

    def check(self, resp: requests.Response, what: str, ok: Iterable[int] = (200,)) -> requests.Response:
        """Turn an unexpected status into a clear one-line error."""
        if resp.status_code in ok:
            return resp
        detail = registry_error_message(resp)
        suffix = f": {detail}" if detail else ""
        resp.close()
        if resp.status_code == 401:
            raise AuthenticationError(f"{what}: unauthorized (HTTP 401){suffix}")
        if resp.status_code == 403:
            raise AuthenticationError(f"{what}: access denied (HTTP 403){suffix}")
        if resp.status_code == 404:
            raise NotFoundError(f"{what}: not found (HTTP 404){suffix}")
        if resp.status_code in RETRYABLE_STATUS:
            raise RegistryError(f"{what}: registry kept failing (HTTP {resp.status_code}) after retries{suffix}")
        raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}{suffix}")

    def close(self) -> None:
        self.session.close()


def _replayable(body: Body) -> bool:
    return body is None or isinstance(body, (bytes, bytearray)) or callable(body)


def _safe_url(url: str) -> str:
    """The URL without its query string (upload URLs carry opaque state, sometimes tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (certificate not trusted? use --ca-cert)"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    return type(exc).__name__
