"""Which scheme a loopback registry speaks, found even when the network drops a connection."""
from __future__ import annotations

import socket
import struct
import threading

from builder.registry.transport import RegistryOptions, Transport


def flaky_plain_http_server(drops: int):
    """A plain-http /v2/ endpoint that resets its first ``drops`` connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    seen = {"n": 0}

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            seen["n"] += 1
            if seen["n"] <= drops:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST
                continue
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def test_a_dropped_first_connection_does_not_make_a_plain_registry_look_like_tls():
    srv, host = flaky_plain_http_server(drops=1)
    try:
        transport = Transport(host, RegistryOptions())
        assert transport.base_url() == f"http://{host}"
        transport.close()
    finally:
        srv.close()
