"""Fixtures for the shared-cache tests: a real registry holding the busybox base image, a
counter that proves whether a RUN step executed, and builders on separate stores."""
from __future__ import annotations

import http.server
import sys
import threading
from pathlib import Path

import pytest

from tests.build.conftest import Builder
from tests.store.conftest import busybox_archive  # noqa: F401  (session fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from servers import REGISTRY_BINARY, RegistryServer  # noqa: E402


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} missing: install Debian's docker-registry (.ci/install)")
    server = RegistryServer(tmp_path_factory.mktemp("cache-registry"), access_log=True).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def isolated_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture(scope="module")
def base_ref(registry, busybox_archive, tmp_path_factory) -> str:
    """busybox pushed to the registry: what a fresh CI machine's FROM pulls."""
    from builder.exporter import load_archive
    from builder.registry.api import push_from_store
    from builder.store.store import ContentStore

    ref = f"{registry.host}/base/busybox:1"
    with ContentStore(tmp_path_factory.mktemp("seed-store")) as store:
        load_archive(store, busybox_archive)
        push_from_store("busybox:latest", store, ref)
    return ref


class RunCounter:
    """An HTTP server on loopback counting requests: a RUN that wgets it proves it ran."""

    def __init__(self) -> None:
        self.hits = 0
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                counter.hits += 1
                body = f"run {counter.hits}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counter():
    c = RunCounter()
    yield c
    c.close()


@pytest.fixture
def machines(tmp_path):
    """Two CI machines: separate stores, each with its own checkout of the same context."""
    def make(name: str) -> Builder:
        ctx = tmp_path / name / "ctx"
        ctx.mkdir(parents=True)
        return Builder(root=tmp_path / name / "root", context=ctx)
    return make


def blob_files(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()} if (root / "blobs" / "sha256").is_dir() else set()
