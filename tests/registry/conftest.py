"""Session-wide real registries for the registry tests: plain, htpasswd Basic, token auth."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import REGISTRY_BINARY, USERS, RegistryServer, TokenServer, htpasswd_yaml  # noqa: E402


def _require_registry() -> None:
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} missing: install Debian's docker-registry (.ci/install)")


@pytest.fixture(autouse=True)
def isolated_docker_config(tmp_path, monkeypatch):
    """Never read or write the real ~/.docker/config.json."""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory):
    _require_registry()
    server = RegistryServer(tmp_path_factory.mktemp("plain-registry")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def htpasswd_registry(tmp_path_factory):
    _require_registry()
    workdir = tmp_path_factory.mktemp("htpasswd-registry")
    server = RegistryServer(workdir, htpasswd_yaml(workdir / "htpasswd", USERS)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("token-server")
    server = TokenServer(workdir, USERS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, token_server):
    _require_registry()
    server = RegistryServer(tmp_path_factory.mktemp("token-registry"), token_server.registry_yaml()).start()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path):
    from images import DirBlobStore

    return DirBlobStore(tmp_path / "store")


@pytest.fixture
def skopeo():
    path = shutil.which("skopeo")
    if not path:
        pytest.fail("skopeo missing: install it (.ci/install)")
    return path
