"""Faults between pybuild and a real registry: retries, resumes, and lies detected."""
from __future__ import annotations

import os
import time

import pytest

from builder.registry.errors import RegistryError, VerificationError
from builder.registry.pull import pull_image
from builder.registry.push import push_image
from builder.registry.transport import RegistryOptions, RetryPolicy
from fault_proxy import FaultProxy, random_faults
from images import DirBlobStore, make_image

FAST_RETRY = RegistryOptions(retry=RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05))


@pytest.fixture
def proxy(plain_registry):
    p = FaultProxy(plain_registry.host)
    yield p
    p.stop()


def image_in(store, tag: str):
    import gzip

    big = gzip.compress(os.urandom(600 << 10), compresslevel=1)
    return make_image(store, [{"a": f"{tag}\n".encode()}, {"b": os.urandom(5000)}], raw_layers=[big])


def blob_path(path: str) -> bool:
    return "/blobs/sha256:" in path


def test_push_and_pull_survive_random_500_429_and_dropped_connections(proxy, store, tmp_path):
    image = image_in(store, "random")
    proxy.policy = random_faults(rate=0.3, seed=7)
    ref = f"{proxy.host}/faults/random:v1"
    pushed = push_image(ref, store, image.manifest, options=FAST_RETRY, chunk_size=256 << 10)
    fresh = DirBlobStore(tmp_path / "fresh")
    pulled = pull_image(ref, fresh, options=FAST_RETRY)
    assert pushed.digest == pulled.manifest.digest == image.manifest.digest
    assert fresh.blobs() == store.blobs()
    # The faults really happened (which ones depends on thread timing; each kind has its own test).
    assert len(proxy.faults()) >= 3


def test_a_blob_download_cut_midway_resumes_with_range(proxy, store, tmp_path):
    image = image_in(store, "resume")
    ref = f"{proxy.host}/faults/resume:v1"
    push_image(ref, store, image.manifest)
    big = image.layer_digests[-1]
    cut = {"done": False}

    def policy(method, path, n):
        if method == "GET" and path.endswith(big) and not cut["done"]:
            cut["done"] = True
            return "drop"
        return None

    proxy.policy = policy
    fresh = DirBlobStore(tmp_path / "fresh")
    pull_image(ref, fresh, options=FAST_RETRY)
    assert fresh.path(big).read_bytes() == store.path(big).read_bytes()
    resumed = [h for m, p, f, h in proxy.log if m == "GET" and p.endswith(big) and not f]
    assert resumed and resumed[0].get("Range", "").startswith("bytes=") and resumed[0]["Range"] != "bytes=0-"


def test_an_interrupted_chunked_upload_resumes_or_restarts_and_ends_correct(proxy, store, tmp_path):
    image = image_in(store, "upload")
    patches = {"n": 0}

    def policy(method, path, n):
        if method == "PATCH":
            patches["n"] += 1
            if patches["n"] in (2, 4):
                return "reset"
        return None

    proxy.policy = policy
    ref = f"{proxy.host}/faults/upload:v1"
    push_image(ref, store, image.manifest, options=FAST_RETRY, chunk_size=128 << 10)
    assert proxy.faults().count("reset") == 2
    proxy.policy = lambda m, p, n: None
    fresh = DirBlobStore(tmp_path / "fresh")
    pull_image(ref, fresh)
    assert fresh.blobs() == store.blobs()


def test_retry_after_is_honoured(proxy, store):
    image = make_image(store, [{"x": b"x"}])
    first = {"seen": False}

    def policy(method, path, n):
        if method == "HEAD" and blob_path(path) and not first["seen"]:
            first["seen"] = True
            return "429"
        return None

    proxy.policy = policy
    proxy.retry_after = "1"
    start = time.monotonic()
    push_image(f"{proxy.host}/faults/after:v1", store, image.manifest, options=FAST_RETRY)
    assert proxy.faults() == ["429"]
    # FAST_RETRY's own backoff is at most 0.05 s: waiting a second means Retry-After was obeyed.
    assert 1.0 <= time.monotonic() - start < 5


@pytest.mark.parametrize("lie", ["corrupt", "lie-short"])
def test_a_registry_that_lies_about_a_blob_is_caught_and_nothing_enters_the_store(proxy, store, tmp_path, lie):
    image = image_in(store, lie)
    ref = f"{proxy.host}/faults/{lie}:v1"
    push_image(ref, store, image.manifest)
    big = image.layer_digests[-1]
    proxy.policy = lambda m, p, n: lie if (m == "GET" and p.endswith(big)) else None
    fresh = DirBlobStore(tmp_path / "fresh")
    with pytest.raises(RegistryError) as err:
        pull_image(ref, fresh, options=FAST_RETRY)
    assert big[:19] in str(err.value)
    assert not fresh.has_blob(big)


def test_a_manifest_that_does_not_match_its_digest_is_rejected(proxy, store, tmp_path):
    image = image_in(store, "badmanifest")
    ref = f"{proxy.host}/faults/badmanifest"
    push_image(f"{ref}:v1", store, image.manifest)
    proxy.policy = lambda m, p, n: "corrupt" if "/manifests/" in p else None
    with pytest.raises(VerificationError):
        pull_image(f"{ref}@{image.manifest.digest}", DirBlobStore(tmp_path / "fresh"), options=FAST_RETRY)


def test_a_registry_that_keeps_failing_gives_a_clear_error_after_the_retries(proxy, store):
    image = make_image(store, [{"x": b"y"}])
    proxy.policy = lambda m, p, n: "503"
    with pytest.raises(RegistryError, match="HTTP 503") as err:
        push_image(f"{proxy.host}/faults/down:v1", store, image.manifest, options=FAST_RETRY)
    assert "\n" not in str(err.value)


def test_an_unreachable_registry_is_a_clear_error(store):
    from servers import free_port

    image = make_image(store, [{"x": b"z"}])
    with pytest.raises(RegistryError, match="cannot reach registry 127.0.0.1"):
        push_image(f"127.0.0.1:{free_port()}/x/y:v1", store, image.manifest, options=FAST_RETRY)


@pytest.mark.parametrize("fault", ["429", "500", "reset"])
def test_a_failed_monolithic_put_restarts_the_upload(proxy, store, fault):
    image = make_image(store, [{"put": f"restart after {fault}".encode()}])
    seen = {"n": 0}

    def policy(method, path, n):
        if method == "PUT" and "/blobs/uploads/" in path:
            seen["n"] += 1
            if seen["n"] == 1:
                return fault
        return None

    proxy.policy = policy
    result = push_image(f"{proxy.host}/faults/put-{fault}:v1", store, image.manifest, options=FAST_RETRY,
                        concurrency=1)
    assert proxy.faults() == [fault]
    assert sorted(result.uploaded) == sorted([image.config_digest, *image.layer_digests])
    # A fresh session was opened for the failed blob: one more POST than blobs.
    assert proxy.methods().count("POST") == len(result.uploaded) + 1
