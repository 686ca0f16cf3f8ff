"""``pybuild system check``: each kind of damage is found (one line, exit 1) and ``--repair`` fixes it.

The damage is done for real to a real store (a built image, its cache, snapshots): a byte
flipped in a blob, a truncated blob, rows and files removed or left behind as a crash would.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.build.conftest import Builder
from tests.hardening.conftest import assert_store_clean, run_pybuild
from tests.store.conftest import busybox_archive  # noqa: F401

from builder.store.check import check_store
from builder.store.store import ContentStore

DOCKERFILE = """\
FROM busybox
RUN echo hello > /hello && mkdir -p /data && echo 1 > /data/one
COPY file.txt /file.txt
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory, busybox_archive):  # noqa: F811
    """A store holding busybox and a built, tagged image (made once, copied per test)."""
    from builder.exporter import load_archive

    base = tmp_path_factory.mktemp("check-template")
    ctx = base / "ctx"
    ctx.mkdir()
    b = Builder(root=base / "root", context=ctx)
    with b.store() as store:
        load_archive(store, busybox_archive)
    b.write("file.txt", "some content\n")
    image_id, _ = b.build(DOCKERFILE, tags=["app:1"])
    return base / "root", image_id


@pytest.fixture
def root(template, tmp_path) -> Path:
    src, _ = template
    dst = tmp_path / "root"
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)  # keeps whiteout devices and xattrs
    return dst


def _image(root: Path, name: str = "app:1"):
    with ContentStore(root) as store:
        return store.get_image(name)


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest[7:]


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "index.db", isolation_level=None)


def _check(root: Path, *args: str):
    result = run_pybuild("system", "check", *args, root=root)
    lines = [line for line in result.stdout.splitlines() if line]
    return result.returncode, lines, result.stderr


def _layer(root: Path):
    return _image(root).layers[-1]


def test_a_fresh_store_is_clean(root):
    code, lines, err = _check(root)
    assert code == 0, lines + [err]
    assert len(lines) == 1 and "is consistent" in lines[0] and "blobs" in lines[0]


def test_a_flipped_byte_is_found_and_repair_removes_the_blob_and_the_image_needing_it(root):
    layer = _layer(root)
    path = _blob(root, layer.digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, lines, _ = _check(root)
    assert code == 1
    assert any(line.startswith(f"corrupt-blob: blob {layer.digest} is corrupt") for line in lines), lines
    assert any(line.startswith("broken-image:") and "app:1" in line for line in lines), lines
    assert any(line.startswith("dangling-cache:") for line in lines), lines
    code, lines, _ = _check(root, "--repair")
    assert code == 0, lines
    assert f"repaired: removed corrupt blob {layer.digest}" in lines
    assert any(line.startswith("repaired: removed image") and "app:1" in line for line in lines), lines
    assert not path.exists()
    assert_store_clean(root)
    listing = run_pybuild("images", root=root, check=True).stdout
    assert "app " not in listing and "busybox" in listing


def test_a_truncated_blob_half_written_is_found(root):
    config = _image(root).config_digest
    path = _blob(root, config)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:10])
    code, lines, _ = _check(root)
    assert code == 1
    assert any(line.startswith(f"corrupt-blob: blob {config}") and "10 bytes" in line for line in lines), lines


def test_a_missing_layer_breaks_the_image_and_repair_drops_image_ref_and_cache(root):
    layer = _layer(root)
    _blob(root, layer.digest).unlink()
    code, lines, _ = _check(root)
    assert code == 1
    assert any(f"its layer {layer.digest} is missing" in line for line in lines), lines
    assert any(line.startswith("dangling-row: layer row of") for line in lines), lines
    code, lines, _ = _check(root, "--repair")
    assert code == 0, lines
    assert_store_clean(root)
    _rebuild(root)   # the build that made it works again, rebuilding the lost step


def _rebuild(root: Path) -> None:
    ctx = root.parent / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "file.txt").write_text("some content\n")
    result = run_pybuild("build", "--progress", "plain", "-t", "app:1", ctx, root=root)
    assert result.returncode == 0, result.stderr
    assert_store_clean(root)


def test_a_lazy_layer_is_not_missing(root):
    layer = _layer(root)
    _blob(root, layer.digest).unlink()
    with ContentStore(root) as store:
        if not hasattr(store, "is_lazy_blob"):
            pytest.fail("the store has no lazy blobs yet")
        store.index.record_remote_blobs([(layer.digest, layer.size, layer.media_type,
                                          {"type": "registry", "ref": "127.0.0.1:1/nowhere"})])
    code, lines, err = _check(root)
    assert code == 0, lines + [err]


def test_a_dangling_reference_is_found_and_dropped(root):
    with _db(root) as db:
        db.execute("INSERT INTO refs VALUES ('docker.io/library/ghost:latest', ?, 0)", ("sha256:" + "ab" * 32,))
    code, lines, _ = _check(root)
    assert code == 1
    assert lines == [f"dangling-ref: reference docker.io/library/ghost:latest points at sha256:{'ab' * 32}, "
                     "which is not a stored image"]
    code, lines, _ = _check(root, "--repair")
    assert code == 0 and "repaired: removed reference docker.io/library/ghost:latest (its image is not stored)" in lines


def test_a_lost_graph_edge_is_found_and_re_recorded(root):
    image = _image(root)
    with _db(root) as db:
        db.execute("DELETE FROM edges WHERE parent = ? AND child = ?", (image.manifest_digest, image.layers[-1].digest))
    code, lines, _ = _check(root)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("missing-row: content graph lacks the edge"), lines
    code, lines, _ = _check(root, "--repair")
    assert code == 0, lines
    # With the edge back, prune keeps the layer.
    run_pybuild("system", "prune", "-a", root=root, check=True)
    assert _blob(root, image.layers[-1].digest).exists()
    assert_store_clean(root)


def test_snapshots_recorded_but_missing_and_present_but_unrecorded(root):
    snap = root / "snapshots" / "sha256"

    def damage(store):
        rows = store.index.snapshots()
        gone, kept = rows[0][0], rows[-1][0]
        subprocess.run(["rm", "-rf", str(snap / gone[7:])], check=True)
        store.index.delete_snapshot(kept)
        return gone, kept

    # What a killed process leaves is put right by the start-up recovery of the next open...
    with ContentStore(root) as store:
        gone, kept = damage(store)
    assert_store_clean(root)
    with ContentStore(root) as store:
        rows = {row[0] for row in store.index.snapshots()}
        assert kept in rows and gone not in rows
    # ...and damage done while the store is open is found, and repaired.
    with ContentStore(root) as store:
        gone, kept = damage(store)
        lines = [p.line() for p in check_store(store).problems]
        assert f"missing-snapshot: snapshot {gone} is recorded but not on disk" in lines
        assert any(line.startswith(f"unrecorded-snapshot: snapshot {kept} is on disk") for line in lines), lines
        report = check_store(store, repair=True)
        assert report.ok, report.remaining
    assert not (snap / kept[7:]).exists()
    _rebuild(root)   # unpacked again when needed


def test_orphaned_temp_files_that_survive_the_start_up_cleanup_are_found(root):
    tmp = root / "tmp"
    # A live process's scratch (its lock held) is not an orphan...
    live = tmp / "p1-live"
    live.mkdir()
    fd = os.open(tmp / "p1-live.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # ...one created after the store was opened (so the start-up cleanup did not see it) is.
        with ContentStore(root) as store:
            dead = tmp / "p2-dead"
            dead.mkdir()
            (dead / "blob-partial").write_bytes(b"x" * 100)
            (tmp / "p2-dead.lock").touch()
            report = check_store(store)
        assert [p.kind for p in report.problems] == ["orphaned-temp"], report.problems
        assert report.problems[0].subject == str(dead)
        with ContentStore(root) as store:  # opening cleans it as usual
            assert check_store(store).ok
            dead.mkdir()
            report = check_store(store, repair=True)
            assert report.ok and any("removed orphaned temp" in line for line in report.repaired)
            assert not dead.exists()
        assert live.exists()
    finally:
        os.close(fd)


def test_stray_files_in_the_blob_directory(root):
    (root / "blobs" / "sha256" / "blob-abc123").write_bytes(b"partial")
    os.symlink("/etc/passwd", root / "blobs" / "sha256" / ("cd" * 32))
    code, lines, _ = _check(root)
    assert code == 1 and len(lines) == 2 and all(line.startswith("stray-file:") for line in lines), lines
    code, lines, _ = _check(root, "--repair")
    assert code == 0, lines
    assert os.path.exists("/etc/passwd")


def test_json_output_and_the_report_counts(root):
    result = run_pybuild("system", "check", "--json", root=root)
    doc = json.loads(result.stdout)
    assert result.returncode == 0 and doc["ok"] is True and doc["problems"] == []
    assert doc["images"] == 2 and doc["refs"] == 2 and doc["blobs"] >= 6 and doc["cache_entries"] > 0
    assert doc["bytes_verified"] == sum(p.stat().st_size for p in (root / "blobs" / "sha256").iterdir())


def test_an_unreadable_store_is_a_one_line_error(tmp_path):
    bad = tmp_path / "file"
    bad.write_text("not a directory")
    code, lines, err = _check(bad)
    assert code != 0 and lines == []
    assert err.startswith("error: ") and "Traceback" not in err


def test_a_multi_platform_index_with_a_platform_never_pulled_is_fine_until_its_content_goes(root):
    from builder.image import mediatypes as mt
    from builder.image.oci import Descriptor, Index, Platform

    with ContentStore(root) as store:
        image = store.get_image("app:1")
        here = Descriptor(image.manifest.media_type, image.manifest_digest, store.blob_size(image.manifest_digest),
                          platform=image.platform)
        absent = Descriptor(mt.OCI_MANIFEST, "sha256:" + "0f" * 32, 500, platform=Platform("linux", "s390x"))
        digest, _ = store.put_bytes(Index([here, absent]).to_json())
        store.add_image(digest, name="multi:1")
    code, lines, _ = _check(root)
    assert code == 0, lines   # the s390x manifest was never pulled: not a problem
    _blob(root, image.layers[-1].digest).unlink()
    code, lines, _ = _check(root)
    assert code == 1
    assert any(line.startswith(f"broken-image: image {digest} (docker.io/library/multi:1)") and "missing" in line
               for line in lines), lines
    code, lines, _ = _check(root, "--repair")
    assert code == 0, lines
    listing = run_pybuild("images", root=root, check=True).stdout
    assert "multi" not in listing
