"""FROM an image in a real registry: pulled once, then used from the store; --pull refreshes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from builder.errors import PybuildError
from tests.build.conftest import Builder, image_tree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from servers import REGISTRY_BINARY, RegistryServer  # noqa: E402


@pytest.fixture
def registry(tmp_path):
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} missing: install Debian's docker-registry (.ci/install)")
    server = RegistryServer(tmp_path / "registry").start()
    yield server
    server.stop()


def test_from_registry_pulls_once_then_works_offline(bbuilder, registry, tmp_path, monkeypatch):
    from builder.registry.api import push_from_store

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    ref = f"{registry.host}/base/busybox:1"
    store = bbuilder.store()
    try:
        push_from_store("busybox:latest", store, ref)
    finally:
        store.close()

    fresh = Builder(root=tmp_path / "fresh-root", context=bbuilder.context)
    fresh.write("Dockerfile", f"FROM {ref}\nRUN echo pulled > /proof\n")
    image_id, report = fresh.build()
    assert (image_tree(fresh, image_id, tmp_path / "t1") / "proof").read_text() == "pulled\n"
    # Only the base's manifest and config were fetched for FROM (BuildKit reports it CACHED too);
    # its layers came when the RUN needed them.
    assert report.steps[0].status == "CACHED"
    assert report.steps[1].status == "DONE"

    registry.stop()  # no network from here on
    _, report = fresh.build()
    assert [s.status for s in report.steps] == ["CACHED", "CACHED"]
    with pytest.raises(PybuildError):
        fresh.build(pull=True)  # --pull must go to the registry, which is down


def test_build_push_to_registry(bbuilder, registry, tmp_path, monkeypatch):
    import json
    import subprocess

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    ref = f"{registry.host}/team/app:1"
    bbuilder.write("Dockerfile", "FROM busybox\nRUN echo pushed > /p\nCMD [\"cat\", \"/p\"]\n")
    bbuilder.build(tags=[ref], outputs=["type=registry"])
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["config"]["Cmd"] == ["cat", "/p"]
