"""``pybuild pull`` and ``pybuild push`` through a fault-injecting proxy in front of a real registry.

Every fault either ends correct after retries (the pulled image is the pushed one, digest for
digest; the pushed image comes back identical from the registry itself) or ends with a clear
one-line error and a non-zero exit. Either way nothing unverified enters the store: ``pybuild
system check`` re-hashes every blob and finds the store consistent, and a failed pull leaves no
image behind.

Faults (``tests/registry/fault_proxy.py``): connection resets, 500/503/429 (with Retry-After),
slow bodies, a body that stalls past the read timeout, bodies cut short (connection dropped, or a
Content-Length that lies), bodies altered on the way (pull: the registry's answer; push: what we
upload), slow uploads; once (recovered) and for good (a clear error).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hardening.conftest import assert_store_clean, cli_env, run_pybuild
from tests.store.conftest import busybox_archive  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from fault_proxy import FaultProxy  # noqa: E402
from servers import REGISTRY_BINARY, RegistryServer  # noqa: E402

from builder.store.store import ContentStore  # noqa: E402

DOCKERFILE = "FROM busybox\nRUN dd if=/dev/urandom of=/blob bs=1k count=3072 2>/dev/null\n"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} missing: install Debian's docker-registry (.ci/install)")
    server = RegistryServer(tmp_path_factory.mktemp("faults-registry")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream):
    p = FaultProxy(upstream.host)
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def fresh_policy(proxy, tmp_path, monkeypatch):
    proxy.policy = lambda m, p, n: None
    proxy.retry_after = "0"
    proxy.log.clear()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture(scope="module")
def template(tmp_path_factory, busybox_archive, upstream):  # noqa: F811
    """A store with a built image (busybox + a 3 MiB layer), also pushed to the registry as faults/base:1."""
    base = tmp_path_factory.mktemp("faults-template")
    root, ctx = base / "root", base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    env = cli_env(DOCKER_CONFIG=str(base / "docker-config"))
    run_pybuild("load", "-i", busybox_archive, root=root, check=True, env=env)
    run_pybuild("build", "-q", "-t", "app:1", ctx, root=root, check=True, env=env)
    run_pybuild("tag", "app:1", f"{upstream.host}/faults/base:1", root=root, check=True, env=env)
    run_pybuild("push", f"{upstream.host}/faults/base:1", root=root, check=True, env=env)
    with ContentStore(root) as store:
        image = store.get_image("app:1")
        layers = [layer.digest for layer in image.layers]
        digest = image.digest
    return root, digest, layers


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def _policy(fault: str, method: str, where: str, times: int | None = 1):
    """Fault ``times`` requests (None: all) whose method is ``method`` and path contains ``where``."""
    seen = {"n": 0}

    def policy(m: str, path: str, n: int):
        if m == method and where in path and (times is None or seen["n"] < times):
            seen["n"] += 1
            return fault
        return None
    return policy


def _one_line_error(result) -> str:
    """The failure is one ``error:`` line (after any progress lines), at most followed by a hint."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    tail = lines[errors[0] + 1:]
    assert tail == [] or (len(tail) == 1 and tail[0].startswith("hint: ")), result.stderr
    return lines[errors[0]]


def _assert_nothing_half_pulled(root: Path, name: str) -> None:
    assert_store_clean(root)
    listing = run_pybuild("images", "--format", "json", root=root, check=True).stdout
    assert name.split(":")[0].rsplit("/", 1)[-1] not in listing


# ---------------------------------------------------------------- pull


BIG = "LAYER"   # stands for the 3 MiB layer's digest in a path match


PULL_RECOVERS = [
    ("reset", "GET", BIG), ("500", "GET", "/manifests/"), ("503", "GET", BIG), ("429", "GET", "/blobs/"),
    ("drop", "GET", BIG), ("stall", "GET", BIG), ("corrupt", "GET", BIG), ("lie-short", "GET", BIG),
]


@pytest.mark.parametrize("fault,method,where", PULL_RECOVERS, ids=[f"{f}-once" for f, _, _ in PULL_RECOVERS])
def test_pull_through_a_fault_once_ends_correct_or_with_a_clear_error(fault, method, where, proxy, template,
                                                                      tmp_path):
    _root, digest, layers = template
    root = tmp_path / "root"
    root.mkdir()
    (root / "registries.json").write_text(json.dumps({"read-timeout": 1}))   # a stall costs 1 s, not 120
    proxy.stall_seconds = 3
    proxy.retry_after = "1" if fault == "429" else "0"
    proxy.policy = _policy(fault, method, layers[-1] if where == BIG else where)
    ref = f"{proxy.host}/faults/base:1"
    start = time.monotonic()
    result = run_pybuild("pull", ref, root=root)
    elapsed = time.monotonic() - start
    assert proxy.faults() == [fault]
    if fault in ("corrupt", "lie-short") and result.returncode != 0:
        # A registry caught lying may be refused outright: then clearly, and nothing stays.
        assert layers[-1][:19] in _one_line_error(result)
        _assert_nothing_half_pulled(root, ref)
        return
    assert result.returncode == 0, result.stderr
    with ContentStore(root) as store:
        assert store.resolve(ref) == digest
        assert [layer.digest for layer in store.get_image(ref).layers] == layers
    if fault == "429":
        assert elapsed >= 1.0   # Retry-After: 1 was obeyed
    if fault in ("drop", "stall"):   # resumed where it was cut, not started again
        ranges = [h.get("Range", "") for m, p, f, h in proxy.log if p.endswith(layers[-1]) and not f]
        assert any(r.startswith("bytes=") and r != "bytes=0-" for r in ranges), ranges
    assert_store_clean(root)


PULL_FAILS = [("corrupt", "GET", BIG), ("lie-short", "GET", BIG), ("corrupt", "GET", "/manifests/"),
              ("503", "GET", "/v2/"), ("reset", "GET", BIG)]


@pytest.mark.parametrize("fault,method,where", PULL_FAILS, ids=[f"{f}-{'layer' if w == BIG else 'any'}-always"
                                                                 for f, _, w in PULL_FAILS])
def test_pull_through_a_lasting_fault_fails_clearly_and_stores_nothing_unverified(fault, method, where, proxy,
                                                                                  template, tmp_path):
    _root, _digest, layers = template
    root = tmp_path / "root"
    proxy.policy = _policy(fault, method, layers[-1] if where == BIG else where, times=None)
    ref = f"{proxy.host}/faults/base:1"
    result = run_pybuild("pull", ref, root=root)
    error = _one_line_error(result)
    if where == BIG:
        assert layers[-1][:19] in error, error
    if fault in ("corrupt", "lie-short"):   # it was reached: no advice to check its address
        assert "--insecure-registry" not in result.stderr, result.stderr
    _assert_nothing_half_pulled(root, ref)
    with ContentStore(root) as store:
        assert not store.has_blob(layers[-1])


def test_slow_bodies_only_take_longer(proxy, template, tmp_path):
    _root, digest, _layers = template
    proxy.policy = lambda m, p, n: "slow" if m == "GET" else None
    ref = f"{proxy.host}/faults/base:1"
    run_pybuild("pull", ref, root=tmp_path / "root", check=True)
    assert proxy.faults().count("slow") >= 3
    with ContentStore(tmp_path / "root") as store:
        assert store.resolve(ref) == digest
    assert_store_clean(tmp_path / "root")


# ---------------------------------------------------------------- push


PUSH_RECOVERS = [
    ("reset", "PUT", "/blobs/uploads/"), ("500", "POST", "/blobs/uploads/"), ("503", "PUT", "/manifests/"),
    ("429", "HEAD", "/blobs/"), ("corrupt-upload", "PUT", "/blobs/uploads/"),
    ("truncate-upload", "PUT", "/blobs/uploads/"), ("drop", "PUT", "/manifests/"),
]


def _push(template, tmp_path, proxy, repo: str):
    src, digest, layers = template
    root = _copy(src, tmp_path / "root")
    ref = f"{proxy.host}/faults/{repo}:1"
    run_pybuild("tag", "app:1", ref, root=root, check=True)
    return root, ref, digest, layers


def _assert_registry_serves(upstream, repo: str, digest: str, tmp_path: Path) -> None:
    """Pulled straight from the registry (no proxy), the pushed image is the one we have."""
    fresh = tmp_path / "verify"
    ref = f"{upstream.host}/faults/{repo}:1"
    run_pybuild("pull", ref, root=fresh, check=True)
    with ContentStore(fresh) as store:
        assert store.resolve(ref) == digest
    assert_store_clean(fresh)


@pytest.mark.parametrize("fault,method,where", PUSH_RECOVERS, ids=[f"{f}-{m}" for f, m, _ in PUSH_RECOVERS])
def test_push_through_a_fault_once_ends_correct(fault, method, where, proxy, upstream, template, tmp_path):
    repo = f"push-{fault}-{method.lower()}"
    root, ref, digest, _layers = _push(template, tmp_path, proxy, repo)
    proxy.policy = _policy(fault, method, where)
    result = run_pybuild("push", ref, root=root)
    assert result.returncode == 0, result.stderr
    assert proxy.faults() == [fault]
    assert_store_clean(root)
    _assert_registry_serves(upstream, repo, digest, tmp_path)


def test_slow_uploads_only_take_longer(proxy, upstream, template, tmp_path):
    root, ref, digest, _ = _push(template, tmp_path, proxy, "push-slow")
    proxy.policy = lambda m, p, n: "slow-upload" if m in ("PUT", "PATCH") else None
    run_pybuild("push", ref, root=root, check=True)
    assert "slow-upload" in proxy.faults()
    _assert_registry_serves(upstream, "push-slow", digest, tmp_path)


@pytest.mark.parametrize("fault,method,where", [("corrupt-upload", "PUT", "/blobs/uploads/"),
                                                ("500", "PUT", "/manifests/")])
def test_push_through_a_lasting_fault_fails_clearly(fault, method, where, proxy, upstream, template, tmp_path):
    repo = f"push-fail-{fault}"
    root, ref, _digest, _ = _push(template, tmp_path, proxy, repo)
    proxy.policy = _policy(fault, method, where, times=None)
    error = _one_line_error(run_pybuild("push", ref, root=root))
    assert ("HTTP 500" in error) if fault == "500" else ("uploading blob" in error), error
    assert_store_clean(root)
    import requests

    resp = requests.get(f"http://{upstream.host}/v2/faults/{repo}/manifests/1", timeout=10)
    assert resp.status_code == 404   # the registry never got an image it cannot serve whole
