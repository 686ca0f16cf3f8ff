"""SIGKILL a real ``pybuild build`` at 50 watched points; the store always survives.

Categories and how each kill is known to have landed there (see ``crashkit``):

* RUN (14): killed once the RUN step has printed a chosen ``tick N`` line (a progress event)
  and before it finished;
* compression (12): killed once the layer's temp blob in ``tmp/`` has grown past a random size,
  with no layer blob published yet;
* store commit (14): killed the moment a new blob appears in ``blobs/`` before its step is
  recorded, or a few ms after the last step finished but before the image is tagged;
* push (10): killed when a chosen kind of blob request (HEAD, POST, PATCH, PUT) reaches a real
  ``docker-registry`` through a slowed proxy, before the manifest is PUT.

A kill that lands elsewhere is verified the same way but not counted. After each kill: no process
of the build survives, ``pybuild system check`` passes, no mount is left, and a rebuild succeeds
with every step finished before the kill CACHED (for a push, the registry then serves the image).

``PYBUILD_CRASH_SEED`` picks the random kill points (default fixed, so CI runs are repeatable).
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest

from tests.hardening.conftest import run_pybuild
from tests.hardening.crashkit import (
    CommitScenario, CompressScenario, CrashContext, PushScenario, RunScenario, kill_once,
)
from tests.store.conftest import busybox_archive  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from fault_proxy import FaultProxy  # noqa: E402
from servers import REGISTRY_BINARY, RegistryServer  # noqa: E402

SEED = int(os.environ.get("PYBUILD_CRASH_SEED", "8"))
HITS = {"RUN": 14, "compression": 12, "store commit": 14, "push": 10}   # 50 kills


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} missing: install Debian's docker-registry (.ci/install)")
    server = RegistryServer(tmp_path_factory.mktemp("crash-registry")).start()

    def slow_blobs(method: str, path: str, n: int):
        if "/blobs/" in path and method != "GET":
            time.sleep(0.03)   # a slow registry, so a kill lands mid-push rather than after it
        return None

    proxy = FaultProxy(server.host, slow_blobs)
    yield proxy
    proxy.stop()
    server.stop()


def _cgroups_in_use() -> bool:
    from builder.runtime import cgroups

    return any(h.unified or h.controllers for h in cgroups.hierarchies()) and os.geteuid() == 0


def _scenario(name: str):
    return {"RUN": RunScenario, "compression": CompressScenario, "store commit": CommitScenario,
            "push": PushScenario}[name]()


@pytest.mark.parametrize("category", list(HITS))
def test_sigkill_at_watched_points_never_damages_the_store(category, tmp_path, busybox_archive,  # noqa: F811
                                                           request):
    scenario = _scenario(category)
    proxy = request.getfixturevalue("registry") if category == "push" else None
    repository = f"{proxy.host}/crash/app" if proxy else "crash/app"
    ctx = CrashContext.create(tmp_path, scenario, repository, proxy)
    run_pybuild("load", "-i", busybox_archive, root=ctx.root, check=True)
    rng = random.Random(f"{SEED}-{category}")
    want = HITS[category]
    hits, misses = [], []
    attempt = 0
    while len(hits) < want and attempt < want * 2:
        attempt += 1
        result = kill_once(scenario, ctx, rng, attempt)
        (hits if result.hit else misses).append(result)
    assert len(hits) == want, (f"{category}: only {len(hits)} of {want} kills landed in the category "
                               f"after {attempt} attempts (seed {SEED})")
    # Every kill found the store consistent; the builds finished before the kill were reused.
    assert all("is consistent" in r.check_output for r in hits)
    assert any(r.finished_before for r in hits)
    if category == "RUN":   # a killed step's cgroups were really left, and removed by the rebuild
        assert any(r.cgroups_left for r in hits) or not _cgroups_in_use()


# ---------------------------------------------------------------- the narrow windows, hit exactly

HOLD = """
import sys, time
from pathlib import Path
from builder.store.store import ContentStore

def hold(*args, **kwargs):
    print("at the point", flush=True)
    time.sleep(120)

store = ContentStore(sys.argv[1])
"""

ADOPT = HOLD + """
tree = store.scratch.path / "layer"
(tree / "etc").mkdir(parents=True)
(tree / "etc" / "hello").write_text("hello")
store.index.record_snapshot = hold          # renamed into place, killed before it is recorded
store.adopt_snapshot(sys.argv[2], tree)
"""

REMOVE = HOLD + """
import shutil
import builder.store.tmpdirs as tmpdirs
real_rmtree = shutil.rmtree

def half_then_hold(path, onerror=None):
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    for p in files[: len(files) // 2]:
        p.unlink()
    hold()

tmpdirs.shutil.rmtree = half_then_hold      # killed half-way through removing the snapshot
store.prune()
"""


def _run_until_held(script: str, *args) -> None:
    import signal
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "at the point", "the script never reached the point"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)


def test_killed_between_renaming_a_snapshot_in_and_recording_it(tmp_path):
    root = tmp_path / "root"
    diff_id = "sha256:" + "5a" * 32
    _run_until_held(ADOPT, root, diff_id)
    snap = root / "snapshots" / "sha256" / diff_id[7:]
    assert (snap / "etc" / "hello").read_text() == "hello"
    from tests.hardening.conftest import assert_store_clean

    assert_store_clean(root)   # opening the store recorded it
    from builder.store.store import ContentStore

    with ContentStore(root) as store:
        assert [row[0] for row in store.index.snapshots()] == [diff_id]


def test_killed_half_way_through_removing_a_snapshot_leaves_no_partial_snapshot(tmp_path):
    from tests.hardening.conftest import assert_store_clean
    from builder.store.store import ContentStore

    root = tmp_path / "root"
    diff_id = "sha256:" + "6b" * 32
    with ContentStore(root) as store:
        tree = store.scratch.path / "layer"
        tree.mkdir()
        for i in range(40):
            (tree / f"f{i}").write_text(str(i))
        store.adopt_snapshot(diff_id, tree)   # no image uses it: prune removes it
    _run_until_held(REMOVE, root)
    base = root / "snapshots" / "sha256"
    # Never a half-emptied snapshot under its real name (a build would use it as the layer).
    assert not (base / diff_id[7:]).exists()
    assert [p.name for p in base.iterdir() if p.name.startswith(".trash-")]
    assert_store_clean(root)   # opening the store finished the removal and forgot the row
    assert list(base.iterdir()) == []
    with ContentStore(root) as store:
        assert store.index.snapshots() == []


SWEEP = HOLD + """
real_delete = store.blobs.delete
manifest = store.resolve("busybox")

def delete_then_hold_at_the_manifest(digest):
    real_delete(digest)
    if digest == manifest:
        hold()

store.index.delete_ref("docker.io/library/busybox:latest")
store.blobs.delete = delete_then_hold_at_the_manifest   # killed once the manifest's file is gone
store.prune()
"""


def test_killed_half_way_through_a_prune_sweep_leaves_no_dangling_rows(tmp_path, busybox_archive):  # noqa: F811
    from tests.hardening.conftest import assert_store_clean

    root = tmp_path / "root"
    run_pybuild("load", "-i", busybox_archive, root=root, check=True)
    before = len(os.listdir(root / "blobs" / "sha256"))
    _run_until_held(SWEEP, root)
    assert len(os.listdir(root / "blobs" / "sha256")) < before   # really part-way
    assert_store_clean(root)
    run_pybuild("system", "prune", root=root, check=True)   # the next prune finishes the job
    assert os.listdir(root / "blobs" / "sha256") == []
    assert_store_clean(root)
