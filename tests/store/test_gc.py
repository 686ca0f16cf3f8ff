"""Garbage collection and disk usage: only what nothing references goes."""
from __future__ import annotations

import threading
import time

import pytest

from builder.store import StoreBusyError

from tests.store.test_images import make_image, make_layer


def test_prune_keeps_named_images_and_removes_the_rest(store, tmp_path):
    kept = make_image(store, tmp_path, "keep:1", {"k": "1"})
    dropped = make_image(store, tmp_path, "drop:1", {"d": "2"})
    stray = make_layer(store, tmp_path, {"s": "3"})  # never referenced
    store.untag("drop:1")
    usage = store.disk_usage()
    assert usage.images.total == 2 and usage.images.active == 1
    assert usage.blobs.reclaimable > 0
    report = store.prune()
    assert report.images == [dropped.digest]
    assert set(report.blobs) == {dropped.digest, dropped.id, dropped.layers[0].digest, stray.digest}
    assert report.reclaimed > 0
    assert set(store.blobs.digests()) == {kept.digest, kept.id, kept.layers[0].digest}
    assert store.get_image("keep:1").digest == kept.digest
    assert store.prune().blobs == []


def test_prune_removes_blobs_the_index_never_heard_of(store):
    digest, _ = store.put_bytes(b"orphan from a crashed process")
    assert store.prune().blobs == [digest]


def test_prune_waits_for_a_lease_and_gives_up_clearly(store, tmp_path):
    with store.lease():
        with pytest.raises(StoreBusyError, match="timed out"):
            store.prune(timeout=0.2)


def test_content_written_under_a_lease_survives_a_concurrent_prune(store, tmp_path):
    done = []

    def prune_soon():
        done.append(store.prune(timeout=30))

    with store.lease():
        layer = make_layer(store, tmp_path, {"fresh": "1"})
        t = threading.Thread(target=prune_soon)
        t.start()
        time.sleep(0.2)
        assert not done  # blocked by our lease
        make_image(store, tmp_path, "fresh:1", {"fresh": "1"})
    t.join(30)
    assert done and layer.digest not in done[0].blobs
    assert store.has_blob(layer.digest)
