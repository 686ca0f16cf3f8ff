"""A fault-injecting HTTP proxy between the client and a real registry.

Each request is forwarded to the upstream registry unless ``policy(method, path, n)``
(``n`` counts requests so far) names a fault:

- ``"500"``, ``"503"``, ``"429"``: answer that status without forwarding (429 carries Retry-After);
- ``"drop"``: forward, send the headers and half the body, then cut the connection;
- ``"lie-short"``: forward, send half the body with a Content-Length that matches it;
- ``"corrupt"``: forward, flip a byte in the body (same length);
- ``"reset"``: read the request, then close without answering;
- ``"redirect"``: answer 307 to the same path on ``redirect_host``;
- ``"slow"``: forward, then trickle the body out in small pieces;
- ``"stall"``: forward, send half the body, then hang for ``stall_seconds`` and cut the connection;
- ``"corrupt-upload"``, ``"truncate-upload"``: flip a byte in / forward only half of the request
  body (what a client uploads) before the registry sees it;
- ``"slow-upload"``: read the request body slowly before forwarding it.
"""
from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from servers import free_port

Policy = Callable[[str, str, int], "str | None"]

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def random_faults(rate: float, seed: int, faults=("500", "429", "drop")) -> Policy:
    """Fault ``rate`` of requests at random (seeded), never twice in a row for one path."""
    rng = random.Random(seed)
    lock = threading.Lock()
    last_faulted: set[str] = set()

    def policy(method: str, path: str, n: int) -> str | None:
        with lock:
            key = f"{method} {path.split('?')[0]}"
            if key in last_faulted or rng.random() >= rate:
                last_faulted.discard(key)
                return None
            last_faulted.add(key)
            return rng.choice(faults)

    return policy


class FaultProxy:
    def __init__(self, upstream: str, policy: Policy | None = None) -> None:
        self.upstream = upstream
        self.policy: Policy = policy or (lambda m, p, n: None)
        self.port = free_port()
        self.redirect_host: str | None = None
        self.retry_after = "0"
        self.stall_seconds = 3.0
        self.log: list[tuple[str, str, str | None, dict]] = []
        self._count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def faults(self) -> list[str]:
        return [f for _, _, f, _ in self.log if f]

    def methods(self) -> list[str]:
        return [m for m, _, _, _ in self.log]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, method: str, path: str, headers: dict) -> str | None:
        with self._lock:
            n = self._count
            self._count += 1
        fault = self.policy(method, path, n)
        self.log.append((method, path, fault, headers))
        return fault

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self, slow: bool = False) -> bytes:
                if slow:
                    return self._slow_body()
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _slow_body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                parts = []
                while length > 0:
                    parts.append(self.rfile.read(min(length, 64 << 10)))
                    length -= len(parts[-1])
                    time.sleep(0.005)
                return b"".join(parts)

            def _simple(self, status: int, extra: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _handle(self) -> None:
                fault = proxy._next(self.command, self.path, dict(self.headers))
                body = self._body(slow=fault == "slow-upload")
                if fault == "corrupt-upload" and body:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                if fault == "truncate-upload" and len(body) > 1:
                    body = body[: len(body) // 2]
                if fault in ("500", "503"):
                    return self._simple(int(fault))
                if fault == "429":
                    return self._simple(429, {"Retry-After": proxy.retry_after})
                if fault == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "redirect" and proxy.redirect_host:
                    return self._simple(307, {"Location": f"http://{proxy.redirect_host}{self.path}"})
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                if body or self.command in ("PUT", "PATCH", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read() if self.command != "HEAD" else b""
                conn.close()
                if fault == "lie-short" and len(data) > 1:
                    data = data[: len(data) // 2]
                if fault == "corrupt" and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in HOP_HEADERS or k.lower() == "content-length":
                        continue
                    self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                    self.end_headers()
                    return
                if fault == "drop" and len(data) > 1:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "stall" and len(data) > 1:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "slow":
                    for i in range(0, len(data), 16 << 10):
                        self.wfile.write(data[i:i + (16 << 10)])
                        self.wfile.flush()
                        time.sleep(0.002)
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        return Handler
