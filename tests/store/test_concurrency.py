"""Many processes, one store: concurrent ingest, and a writer killed with SIGKILL mid-blob."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

from builder.store import ContentStore

INGEST = textwrap.dedent("""
    import io, sys
    from builder.store import ContentStore
    root, seed = sys.argv[1], int(sys.argv[2])
    shared = bytes(range(256)) * 8192          # the same 2 MiB in every process
    own = (b"%08d" % seed) * 200_000           # different in every process
    with ContentStore(root) as store:
        for _ in range(5):
            store.put_blob(io.BytesIO(shared))
            store.put_blob(io.BytesIO(own))
            store.index.set_ref("docker.io/library/p%d:latest" % seed, "sha256:" + "0" * 64)
            store.cache_put("key-%d" % seed, {"seed": seed})
    print("ok")
""")


def test_processes_ingesting_same_and_different_blobs_at_once(tmp_path):
    root = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", INGEST, str(root), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        assert out.strip() == b"ok"
    with ContentStore(root) as store:
        digests = store.blobs.digests()
        assert len(digests) == 7  # one shared + six own
        for digest in digests:
            with store.open_blob(digest) as fh:
                assert "sha256:" + hashlib.sha256(fh.read()).hexdigest() == digest
        assert len(store.index.refs()) == 6
        assert len(store.index.cache_keys()) == 6
    assert sorted(p.name for p in (root / "tmp").iterdir()) == []


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from builder.store import ContentStore

    class Slow:
        def __init__(self): self.sent = 0
        def read(self, n=-1):
            if self.sent >= 4:
                time.sleep(60)          # hang mid-blob until killed
            self.sent += 1
            if self.sent == 4:
                print("writing", flush=True)
            return b"x" * 65536

    with ContentStore(sys.argv[1]) as store:
        store.put_blob(Slow())
""")


def test_a_writer_killed_mid_blob_leaves_nothing_visible(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(root)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"writing"
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in (root / "tmp").rglob("*") if p.is_file()]
    assert any(p.name.startswith("blob-") and p.stat().st_size > 0 for p in leftovers)
    assert list((root / "blobs" / "sha256").iterdir()) == []
    with ContentStore(root) as store:  # the next open cleans the dead writer's scratch space
        assert list((root / "tmp").iterdir()) == []
        assert store.blobs.digests() == []


LIVE_WRITER = textwrap.dedent("""
    import sys, time
    from builder.store import ContentStore
    store = ContentStore(sys.argv[1])
    with store.blob_writer() as w:
        w.write(b"in progress")
        print("ready", flush=True)
        sys.stdin.readline()
        print(w.commit()[0], flush=True)
""")


def test_opening_the_store_never_cleans_a_live_process_scratch(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(root)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        with ContentStore(root):
            pass  # cleaning runs here
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        digest = proc.stdout.readline().strip().decode()
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with ContentStore(root) as store:
        assert store.has_blob(digest)


SNAPSHOTTER = textwrap.dedent("""
    import sys
    from builder.store import ContentStore
    with ContentStore(sys.argv[1]) as store:
        print(store.layer_snapshot(sys.argv[2]))
""")


def test_processes_asking_for_one_snapshot_at_once_unpack_it_once(busybox_image, store):
    diff_id = busybox_image.diff_ids[0]
    procs = [subprocess.Popen([sys.executable, "-c", SNAPSHOTTER, str(store.root), diff_id],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    paths = set()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        paths.add(out.strip().decode())
    assert len(paths) == 1
    assert [row[0] for row in store.index.snapshots()] == [diff_id]
    assert os.path.isfile(os.path.join(paths.pop(), "bin", "busybox"))


CHURN = textwrap.dedent("""
    import sys
    from builder.exporter import load_archive
    from builder.store import ContentStore
    root, archive, role, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with ContentStore(root) as store:
        for i in range(rounds):
            if role == "load":
                load_archive(store, archive)
                store.tag("busybox", "churn:%d" % i)
                store.untag("churn:%d" % i)
            else:
                store.prune(timeout=60)
    print("ok")
""")


def test_loads_tags_and_prunes_running_together_keep_the_store_whole(tmp_path, busybox_archive):
    root = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", CHURN, str(root), str(busybox_archive), role, "6"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for role in ("load", "load", "load", "prune", "prune")]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-2000:]
    with ContentStore(root) as store:
        image = store.get_image("busybox")
        for digest in [image.digest, image.id] + [layer.digest for layer in image.layers]:
            with store.open_blob(digest) as fh:
                assert "sha256:" + hashlib.sha256(fh.read()).hexdigest() == digest
        assert [r.name for r in store.list_images()] == ["docker.io/library/busybox:latest"]
        assert store.prune().blobs == []


def test_a_load_killed_halfway_leaves_no_image_and_nothing_prune_cannot_clear(tmp_path, busybox_archive):
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "builder", "--root", str(root), "load"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data = busybox_archive.read_bytes()
    proc.stdin.write(data[: len(data) // 2])  # the layer blob is half-way through
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not any(p.name.startswith("blob-") for p in (root / "tmp").rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(p.name.startswith("blob-") for p in (root / "tmp").rglob("*")), "the load never got to the layer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with ContentStore(root) as store:
        assert list((root / "tmp").iterdir()) == []
        assert store.list_images() == []
        store.prune()
        assert store.blobs.digests() == []
