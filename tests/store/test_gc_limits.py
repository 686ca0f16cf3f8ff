"""The store's size limit over many real builds, and garbage collection beside a running build."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from builder.store import ContentStore
from builder.store.check import check_store
from builder.store.gc import last_gc, prune
from builder.store.locks import optional_lock
from tests.build.conftest import Builder, bbuilder, builder  # noqa: F401  (fixtures)
from tests.store.conftest import busybox_archive  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]

DOCKERFILE = """FROM busybox
ARG N
COPY data.bin /data.bin
RUN head -c 60000 /dev/urandom > /run.bin && echo $N > /n
"""

SLOW_DOCKERFILE = """FROM busybox
COPY slow.txt /slow.txt
RUN sleep 1.5 && head -c 100000 /dev/urandom > /x && cat /slow.txt > /copy
"""


def tree_bytes(path: Path) -> int:
    """Apparent bytes of everything below ``path`` (not counting ``path`` itself)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def store_bytes(root: Path) -> int:
    """The store's size, measured here from the files: blob files, snapshot trees, cache mounts."""
    total = sum(e.stat().st_size for e in os.scandir(root / "blobs" / "sha256") if e.is_file())
    for base in (root / "snapshots" / "sha256", root / "cache" / "mounts"):
        if base.is_dir():
            total += sum(tree_bytes(Path(e.path)) for e in os.scandir(base) if e.is_dir())
    return total


def own_bytes(root: Path, image_ref: str, base_ref: str = "busybox") -> int:
    """What an image adds over its base: its own layer blobs and their snapshots."""
    with ContentStore(root) as store:
        image = store.get_image(image_ref)
        base = set(store.get_image(base_ref).diff_ids)
        total = 0
        for diff_id, layer in zip(image.diff_ids, image.layers):
            if diff_id not in base:
                total += store.blob_size(layer.digest) + tree_bytes(store.snapshot_path(diff_id))
    return total


def lease_held(root: Path) -> bool:
    with optional_lock(root / "locks" / "gc.lock", exclusive=True) as free:
        return not free


def start_slow_build(b: Builder, tag: str) -> subprocess.Popen:
    """A real ``pybuild build`` in another process that runs for a while (its RUN sleeps);
    returns once it holds its lease on the store."""
    b.write("Dockerfile", SLOW_DOCKERFILE)
    b.write("slow.txt", f"for {tag}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_GC_KEEP_STORAGE"}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "--root", str(b.root), "build", "-t", tag,
                             "--progress", "plain", str(b.context)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not lease_held(b.root):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the build never took its lease"
        time.sleep(0.02)
    return proc


def assert_image_complete(root: Path, ref: str, tmp: Path) -> None:
    with ContentStore(root) as store:
        image = store.get_image(ref)
        assert all(store.has_blob(d.digest) for d in image.layers) and store.has_blob(image.id)
        target = tmp / f"unpacked-{ref.replace(':', '-')}"
        target.mkdir()
        store.unpack_image(image, target)
        assert (target / "x").stat().st_size == 100000 and (target / "bin" / "busybox").is_file()
        assert check_store(store).ok


def test_automatic_gc_keeps_the_store_under_its_limit_over_20_builds(bbuilder: Builder, monkeypatch):
    monkeypatch.delenv("PYBUILD_GC_KEEP_STORAGE", raising=False)
    root = bbuilder.root
    with ContentStore(root) as store:
        store.image_snapshots(store.get_image("busybox"))  # unpacked now rather than by the first build
    base = store_bytes(root)  # busybox: a ~1.2MB blob and its ~2MB snapshot
    limit = base + 1_000_000  # room for about three of the builds below
    (root / "config.json").write_text(json.dumps({"gc": {"keepStorage": str(limit)}}))
    grown = 0
    first_layers: list[str] = []
    for n in range(20):
        # Changing inputs: a new 100kB file (incompressible) and a new RUN layer every time.
        bbuilder.write("data.bin", "")
        (bbuilder.context / "data.bin").write_bytes(os.urandom(100_000))
        image_id, rep = bbuilder.build(DOCKERFILE, tags=["app:latest"], build_args={"N": str(n)})
        assert rep.cached == 1  # only FROM: every other step is new
        own = own_bytes(root, "app:latest")
        grown += own
        size = store_bytes(root)
        # The bound: each build ends with the GC, which drops the least recently used cache and
        # unnamed images until the store is under the limit - but it never drops a named image.
        # busybox:latest (under the limit by itself) and app:latest (the build just made) are
        # named, so the store is under the limit unless those two alone exceed it, and then it is
        # under the limit plus this build's own layers.
        assert size <= limit + own, (n, size, limit, own)
        if n == 0:
            with ContentStore(root) as store:
                first_layers = [d.digest for d in store.get_image("app:latest").layers[1:]]
    assert base + grown > 2 * limit  # without collection the store would be far over
    gc = last_gc(root)
    assert gc["outcome"] == "collected" and gc["size_after"] <= limit
    with ContentStore(root) as store:
        assert not any(store.has_blob(d) for d in first_layers)  # the oldest build's layers went
        records = [k for k, _, _ in store.index.cache_keys() if not k.startswith("step:")]
        assert len(records) < 20  # not one record per build step kept
    # Least recently used first: the newest build is still cached entirely.
    _, again = bbuilder.build(DOCKERFILE, tags=["app:latest"], build_args={"N": "19"})
    assert again.cached == len(again.steps)


def test_prune_waits_for_a_running_build_whose_image_comes_out_whole(bbuilder: Builder, tmp_path):
    root = bbuilder.root
    proc = start_slow_build(bbuilder, "slow:1")
    finished: dict[str, float] = {}

    def gc() -> None:
        with ContentStore(root) as store:
            finished["report"] = prune(store, cache=True, keep_storage=0, timeout=60)
        finished["prune"] = time.monotonic()

    t = threading.Thread(target=gc)
    t.start()
    out, _ = proc.communicate(timeout=60)
    finished["build"] = time.monotonic()
    t.join(60)
    assert proc.returncode == 0, out.decode()
    assert finished["prune"] >= finished["build"] - 0.5  # it waited for the build's lease
    report = finished["report"]
    assert report.cache_entries >= 2  # the build's own cache records went, its image stays
    assert_image_complete(root, "slow:1", tmp_path)


def test_automatic_gc_skips_while_a_build_runs_and_catches_up_after(bbuilder: Builder, tmp_path, monkeypatch):
    root = bbuilder.root
    other = Builder(root=root, context=tmp_path / "other")
    other.context.mkdir()
    proc = start_slow_build(other, "slow:1")
    monkeypatch.setenv("PYBUILD_GC_KEEP_STORAGE", "1kB")  # always over: every build wants a GC
    (bbuilder.context / "data.bin").write_bytes(os.urandom(100_000))
    t0 = time.monotonic()
    bbuilder.build(DOCKERFILE, build_args={"N": "1"})  # unnamed: only the newest image is kept
    took = time.monotonic() - t0
    assert proc.poll() is None, "the slow build should still be running"
    assert last_gc(root)["outcome"] == "busy"  # skipped, not waited for: no deadlock, no delay
    assert took < 5
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    (bbuilder.context / "data.bin").write_bytes(os.urandom(100_000))
    bbuilder.build(DOCKERFILE, build_args={"N": "2"})
    gc = last_gc(root)
    assert gc["outcome"] == "collected" and gc["cache_records"] > 0 and gc["images"] >= 1
    with ContentStore(root) as store:
        unnamed = [s for s in store.list_images() if s.name is None]
        assert len(unnamed) == 1  # the image of the N=1 build went, the one just built stays
        assert {s.name for s in store.list_images() if s.name} == {"docker.io/library/busybox:latest",
                                                                   "docker.io/library/slow:1"}
    assert_image_complete(root, "slow:1", tmp_path)
    # Named images alone exceed 1kB: the cache of the build just made holds nothing more than its
    # image, so it stays and an identical build is cached entirely.
    _, again = bbuilder.build(DOCKERFILE, build_args={"N": "2"})
    assert again.cached == len(again.steps)
