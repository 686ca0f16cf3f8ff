"""`pybuild run`'s run cache: later runs skip the store, yet always run what the name points at now.

Real store, real CLI processes. Whether a run went through the store is seen
from outside: the run is made by a small driver that reports whether
``builder.store`` was imported.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime_support import store_image

DRIVER = ("import sys; from builder.cli import main; code = main(sys.argv[1:]); "
          "print('STORE' if 'builder.store' in sys.modules else 'CACHE', file=sys.stderr); sys.exit(code)")


def run(root: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """(exit code, stdout, "STORE" or "CACHE") of `pybuild --root ROOT ARGS`."""
    proc = subprocess.run([sys.executable, "-c", DRIVER, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    path = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert path in ("STORE", "CACHE"), proc.stderr
    return proc.returncode, proc.stdout, path


@pytest.fixture
def root(tmp_path, busybox_rootfs) -> Path:
    root = tmp_path / "store"
    store_image(root, busybox_rootfs, "busybox:latest", cmd=["sh"], env=["PATH=/bin"])
    store_image(root, busybox_rootfs, "other:1", cmd=["echo", "other"], env=["PATH=/bin"])
    return root


def test_second_run_skips_the_store(root) -> None:
    assert run(root, "run", "--rm", "busybox", "echo", "one") == (0, "one\n", "STORE")
    assert run(root, "run", "--rm", "busybox", "echo", "two") == (0, "two\n", "CACHE")
    # A digest or ID is never served from the cache.
    image_id = subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "images", "-q", "--no-trunc"],
                              capture_output=True, text=True, check=True).stdout.split()[0]
    assert run(root, "run", "--rm", image_id, "echo", "three") == (0, "three\n", "STORE")


def test_retagged_name_runs_the_new_image(root) -> None:
    assert run(root, "run", "--rm", "busybox")[2] == "STORE"
    subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "tag", "other:1", "busybox:latest"],
                   check=True, capture_output=True)
    assert run(root, "run", "--rm", "busybox") == (0, "other\n", "STORE")
    assert run(root, "run", "--rm", "busybox") == (0, "other\n", "CACHE")


def test_removed_image_is_not_run_from_the_cache(root) -> None:
    assert run(root, "run", "--rm", "busybox", "true")[0] == 0
    subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "rmi", "busybox"],
                   check=True, capture_output=True)
    code, _, path = run(root, "run", "--rm", "busybox", "true")
    assert (code, path) == (1, "STORE")


def test_pruned_snapshots_are_unpacked_again(root, busybox_rootfs) -> None:
    assert run(root, "run", "--rm", "busybox", "true")[0] == 0
    snapshots = root / "snapshots" / "sha256"
    for name in ("busybox", "other:1"):
        subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "rmi", name], check=True,
                       capture_output=True)
    subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "system", "prune"], check=True,
                   capture_output=True)
    assert list(snapshots.iterdir()) == []
    store_image(root, busybox_rootfs, "busybox:latest", cmd=["sh"], env=["PATH=/bin"])  # same content again
    assert run(root, "run", "--rm", "busybox", "echo", "back") == (0, "back\n", "STORE")
    assert len(list(snapshots.iterdir())) == 1


def test_prune_leaves_a_running_containers_layers_alone(root) -> None:
    assert run(root, "run", "--rm", "busybox", "true")[2] == "STORE"
    flag = root / "started"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "--root", str(root), "run", "--rm", "-v",
                             f"{root}:/host", "busybox", "sh", "-c", "touch /host/started; sleep 1; echo done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        for name in ("busybox", "other:1"):
            subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "rmi", name], check=True,
                           capture_output=True)
        prune = subprocess.run([sys.executable, "-m", "builder", "--root", str(root), "system", "prune"],
                               capture_output=True, text=True)
        assert prune.returncode == 0, prune.stderr
        assert len(list((root / "snapshots" / "sha256").iterdir())) == 1     # in use: kept
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, out, err.strip().splitlines()[-1]) == (0, "done\n", "CACHE")


@pytest.mark.parametrize("tamper", [
    lambda doc: doc.update(snapshots=["/"]),                                 # the host's root as a lowerdir
    lambda doc: doc.update(snapshots=[doc["snapshots"][0] + "/../../.."]),
    lambda doc: doc.update(use_locks=["/etc/passwd"]),
    lambda doc: doc.update(defaults={"bogus": 1}),
    lambda doc: doc.update(version=0),
], ids=["host-root", "dotdot", "lock-elsewhere", "bad-defaults", "old-version"])
def test_a_record_naming_anything_else_is_not_used(root, tamper) -> None:
    import json
    assert run(root, "run", "--rm", "busybox", "true")[2] == "STORE"
    (record,) = (root / "run-cache").iterdir()
    doc = json.loads(record.read_text())
    tamper(doc)
    record.write_text(json.dumps(doc))
    probe = f"test -e {root} && echo host || echo image"        # the store root exists only on the host
    assert run(root, "run", "--rm", "busybox", "sh", "-c", probe) == (0, "image\n", "STORE")
