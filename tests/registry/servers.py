"""Real registry processes and helper servers for the registry tests.

:class:`RegistryServer` runs Debian's ``docker-registry`` (CNCF distribution) on a free
loopback port with storage in a temp dir, optionally behind htpasswd Basic auth or
token auth. :class:`TokenServer` is a small Bearer token service signing JWTs with a
test key the registry trusts through ``auth.token.rootcertbundle``.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import subprocess
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

REGISTRY_BINARY = "/usr/bin/docker-registry"
# The accounts of the htpasswd and token-auth registries.
USERS = {"alice": "correct horse battery staple", "bob": "hunter2-but-longer"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RegistryServer:
    """One ``docker-registry`` process; ``host`` is ``127.0.0.1:PORT``."""

    workdir: Path
    auth_yaml: str = ""
    port: int = field(default_factory=free_port)
    bind: str = "127.0.0.1"
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve https
    access_log: bool = False  # log each request with its response size to ``log_path``
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    def start(self) -> "RegistryServer":
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"log:\n  level: error\n  accesslog:\n    disabled: {'false' if self.access_log else 'true'}\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.bind}:{self.port}\n"
            + (f"  tls:\n    certificate: {self.tls[0]}\n    key: {self.tls[1]}\n" if self.tls else "")
            + self.auth_yaml
        )
        self.log_path = self.workdir / "registry.log"
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the readiness probe does not verify TLS
                    requests.get(f"{'https' if self.tls else 'http'}://{self.host}/v2/", timeout=1, verify=False)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start in 20 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def htpasswd_yaml(path: Path, users: dict[str, str]) -> str:
    import bcrypt

    path.write_text("".join(
        f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n" for u, p in users.items()
    ))
    return f"auth:\n  htpasswd:\n    realm: pybuild-test\n    path: {path}\n"


class TokenServer:
    """A Bearer token service: ``GET /token?service=&scope=`` with optional Basic auth.

    ``users`` maps user → password; a known user gets every action asked for, anonymous
    callers get ``pull`` on repositories under ``public/``. ``answer_key`` chooses whether
    the JSON answer carries ``token`` or ``access_token``; ``requests_seen`` records the
    scopes of each request (to check caching).
    """

    SERVICE = "pybuild-test-registry"
    ISSUER = "pybuild-test-issuer"

    def __init__(self, workdir: Path, users: dict[str, str], expires_in: int = 300) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.expires_in = expires_in
        self.answer_key = "token"
        self.requests_seen: list[tuple[str | None, tuple[str, ...]]] = []
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuild test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._cert_der_b64 = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_yaml(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {self.SERVICE}\n    issuer: {self.ISSUER}\n"
            f"    rootcertbundle: {self.cert_path}\n"
        )

    def start(self) -> "TokenServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def grant(self, user: str | None, scope: str) -> dict | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return None
        wanted = [a for a in actions.split(",") if a]
        if user is None:
            wanted = [a for a in wanted if a == "pull" and name.startswith("public/")]
        return {"type": kind, "name": name, "actions": wanted} if wanted else None

    def issue(self, user: str | None, scopes: list[str]) -> str:
        import jwt

        now = int(time.time())
        access = [g for g in (self.grant(user, s) for s in scopes) if g]
        claims = {
            "iss": self.ISSUER, "sub": user or "", "aud": self.SERVICE,
            "exp": now + self.expires_in, "nbf": now - 10, "iat": now,
            "jti": uuid.uuid4().hex, "access": access,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [self._cert_der_b64]})

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                scopes = []
                for s in query.get("scope", []):
                    scopes.extend(s.split(" "))
                server.requests_seen.append((user, tuple(scopes)))
                body = json.dumps({
                    server.answer_key: server.issue(user, scopes),
                    "expires_in": server.expires_in,
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                # OAuth2 refresh-token grant (docker's identity tokens): refresh_token=<user>:<password>.
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                name, _, password = (form.get("refresh_token") or [""])[0].partition(":")
                if form.get("grant_type") != ["refresh_token"] or server.users.get(name) != password:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                scopes = " ".join(form.get("scope", [])).split()
                server.requests_seen.append((name, tuple(scopes)))
                body = json.dumps({"access_token": server.issue(name, scopes),
                                   "expires_in": server.expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
