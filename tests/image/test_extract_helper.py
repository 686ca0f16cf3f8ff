"""The file-creating helper process: the same trees as extracting alone, failures as one line.

Every apply here runs twice, with the helper off and with it ``always`` (started at
once and waited for, so small layers use it too), and the results must be identical:
trees, metadata, hard links, and error messages.
"""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.image import extract_helper, layer_apply
from builder.image import mediatypes as mt
from builder.image.errors import LayerError
from builder.image.extract_helper import FileCreator, HelperError
from builder.image.layer import apply_layer, write_layer

from .image_helpers import entry, make_tar, requires_root, snapshot


@pytest.fixture
def helper_count(monkeypatch):
    """How many files the helper accepted, over the test."""
    taken = {"files": 0}
    offer = FileCreator.offer

    def counting(self, *args):
        accepted = offer(self, *args)
        taken["files"] += accepted
        return accepted

    monkeypatch.setattr(FileCreator, "offer", counting)
    return taken


def apply_both(tmp_path: Path, layers: list[bytes], monkeypatch, lower: dict[str, bytes] | None = None):
    """Apply ``layers`` in order onto a fresh dir (holding ``lower`` files), helper off and always.

    Returns each run's (snapshot, error message or None).
    """
    results = []
    for mode in ("off", "always"):
        monkeypatch.setenv(layer_apply.HELPER_ENV, mode)
        target = tmp_path / mode
        target.mkdir()
        for rel, data in (lower or {}).items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)
        # Fixed times, so the two runs compare equal even across a second boundary.
        for path in [p for p in target.rglob("*")] + [target]:
            os.utime(path, (1_650_000_000, 1_650_000_000), follow_symlinks=False)
        error = None
        try:
            for blob in layers:
                apply_layer(io.BytesIO(blob), target, mt.OCI_LAYER_TAR)
        except LayerError as exc:
            error = str(exc).replace(str(target), "TARGET")
        # A failed apply leaves directories with the times they were made (it restores them
        # only at the end): compared without times, as two runs fall in different seconds.
        results.append((snapshot(target, mtimes=error is None), error))
    return results


def make_tree(root: Path, files: int = 400) -> None:
    for i in range(files):
        d = root / f"d{i % 9}" / f"s{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i % 5000))
        os.chmod(d / f"f{i}", (0o644, 0o600, 0o755, 0o4755, 0o2711, 0o1777)[i % 6])
        os.utime(d / f"f{i}", (1_600_000_000 + i, 1_600_000_000 + i))
    (root / "d0" / "big").write_bytes(os.urandom(900 << 10))  # more than one pipe read
    (root / "d0" / "empty").write_bytes(b"")
    os.link(root / "d0" / "s0" / "f0", root / "d1" / "hard")
    os.symlink("../d0/s0/f0", root / "d1" / "sym")


def test_a_tree_extracts_the_same_with_the_helper(tmp_path, monkeypatch, helper_count):
    src = tmp_path / "src"
    make_tree(src)
    out = io.BytesIO()
    write_layer(src, out, compression=mt.UNCOMPRESSED)
    (off, off_error), (always, always_error) = apply_both(tmp_path, [out.getvalue()], monkeypatch)
    assert off_error is None and always_error is None
    assert always == off
    assert off == snapshot(src)
    assert helper_count["files"] > 100  # the helper made many of them (all, unless its queue filled)


@requires_root
def test_owners_and_set_id_bits_are_the_same_with_the_helper(tmp_path, monkeypatch, helper_count):
    members = [(entry("d", tarfile.DIRTYPE, mode=0o755), None)]
    for i in range(40):
        members.append((entry(f"d/f{i}", mode=(0o4755, 0o644, 0o2750)[i % 3], uid=i % 3 * 1000, gid=i % 4),
                        b"x" * i))
    (off, _), (always, _) = apply_both(tmp_path, [make_tar(members)], monkeypatch)
    assert always == off
    assert off["d/f0"][1:3] == (0o4755, (0, 0))
    assert off["d/f4"][1:3] == (0o644, (1000, 0))
    assert helper_count["files"] > 10


def _file(name: str, data: bytes, **fields) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, **fields), data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    return entry(name, tarfile.DIRTYPE, mode=0o755), None


# Layers where a later entry depends on, or replaces, a file that may still be queued.
HAZARDS = {
    "same name twice": [_dir("d/"), _file("d/f", b"first"), _file("d/f", b"second")],
    "through a symlink, then by name": [
        _dir("d/"), _file("d/x", b"1"), (entry("l", tarfile.SYMTYPE, linkname="d"), None),
        _file("l/x", b"2"), _file("d/x", b"3"), _file("l/y", b"4"), _file("d/y", b"5")],
    "implicit directory, then a file of its name": [
        _dir("d/"), _file("d/sub/f", b"1"), _file("d/sub", b"2")],
    "hard link to a queued file": [
        _dir("d/"), _file("d/f", b"data"), (entry("d/h", tarfile.LNKTYPE, linkname="d/f"), None)],
    "file, then a directory of its name": [
        _dir("d/"), _file("d/a", b"1"), _dir("d/a/"), _file("d/a/b", b"2")],
    "own whiteout of a queued file": [_dir("d/"), _file("d/f", b"1"), _file("d/.wh.f", b"")],
    "directory of queued files replaced by a file": [
        _dir("d/"), _dir("d/e/"), _file("d/e/f", b"1"), _file("d/e/g", b"2"), _file("d/e", b"3")],
    "queued file used as a directory": [_dir("d/"), _file("d/f", b"1"), _file("d/f/g", b"2")],
    "opaque directory": [_dir("d/"), _file("d/f", b"1"), _file("d/.wh..wh..opq", b""), _file("d/g", b"2")],
}


@pytest.mark.parametrize("lower", [None, {"d/f": b"lower", "d/e/old": b"lower", "d/a": b"lower"}],
                         ids=["empty target", "lower layer"])
@pytest.mark.parametrize("hazard", sorted(HAZARDS))
def test_entries_that_depend_on_queued_files_see_them(tmp_path, monkeypatch, hazard, lower):
    # Many files first, so the helper has a queue when the hazard comes.
    members = [_dir("w/")] + [_file(f"w/f{i}", b"w" * i) for i in range(200)] + HAZARDS[hazard]
    (off, off_error), (always, always_error) = apply_both(tmp_path, [make_tar(members)], monkeypatch, lower)
    assert always_error == off_error
    assert always == off


def test_a_second_layer_over_helper_made_files(tmp_path, monkeypatch):
    first = make_tar([_dir("d/")] + [_file(f"d/f{i}", b"1") for i in range(100)])
    # With its directory's entry, as layer writers make them: the times are the layer's, not the clock's.
    second = make_tar([_dir("d/")] + [_file(f"d/f{i}", b"2") for i in range(0, 100, 2)] + [_file("d/.wh.f1", b"")])
    (off, _), (always, _) = apply_both(tmp_path, [first, second], monkeypatch)
    assert always == off
    assert "d/f1" not in off and off["d/f0"] != off["d/f3"]


def test_a_failure_in_the_helper_is_raised_with_its_path(tmp_path):
    creator = FileCreator.start(wait=True)
    assert creator is not None
    try:
        assert creator.offer(str(tmp_path / "made"), b"abc", 0o640, 0, 0, 0, 1_600_000_000)
        assert creator.offer(str(tmp_path / "missing" / "f"), b"abc", 0o644, 0, 0, 0, 0)
        assert creator.offer(str(tmp_path / "after"), b"abc", 0o644, 0, 0, 0, 0)
        with pytest.raises(FileNotFoundError) as caught:
            creator.sync()
        assert caught.value.filename == str(tmp_path / "missing" / "f")
    finally:
        creator.stop()
    made = tmp_path / "made"
    assert made.read_bytes() == b"abc" and made.stat().st_mtime == 1_600_000_000
    assert made.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "after").exists()  # nothing more after a failure


def test_records_cut_across_pipe_reads_arrive_whole(tmp_path):
    creator = FileCreator.start(wait=True)
    assert creator is not None
    contents = {f"f{i}": os.urandom((i * 7919) % (700 << 10)) for i in range(40)}
    try:
        for name, data in contents.items():
            while not creator.offer(str(tmp_path / name), data, 0o644, 0, 0, 0, 0):
                creator.sync()  # queue full: let the helper catch up
        creator.close()
    finally:
        creator.stop()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == contents


def test_a_helper_that_dies_is_one_clear_error(tmp_path, monkeypatch):
    start = FileCreator.start

    def start_then_kill(wait=False):
        creator = start(wait=True)
        creator._proc.kill()
        creator._proc.wait()
        return creator

    monkeypatch.setattr(FileCreator, "start", start_then_kill)
    monkeypatch.setenv(layer_apply.HELPER_ENV, "always")
    blob = make_tar([_dir("d/")] + [_file(f"d/f{i}", os.urandom(3000)) for i in range(200)])
    with pytest.raises(LayerError) as caught:
        apply_layer(io.BytesIO(blob), tmp_path, mt.OCI_LAYER_TAR)
    assert str(caught.value) == "cannot apply layer: the file-creating helper process exited unexpectedly"
    assert issubclass(HelperError, OSError)


def test_the_helper_setting_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(layer_apply.HELPER_ENV, "sometimes")
    with pytest.raises(LayerError, match=r"PYBUILD_EXTRACT_HELPER='sometimes': choose auto, off or always"):
        apply_layer(io.BytesIO(make_tar([_file("f", b"1")])), tmp_path, mt.OCI_LAYER_TAR)


def test_auto_starts_the_helper_only_for_big_layers(tmp_path, monkeypatch):
    started = []
    start = FileCreator.start
    monkeypatch.setattr(FileCreator, "start", lambda wait=False: started.append(1) or start(wait))
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: 1)
    monkeypatch.delenv(layer_apply.HELPER_ENV, raising=False)
    small = make_tar([_dir("d/")] + [_file(f"d/f{i}", b"x") for i in range(layer_apply.HELPER_AFTER)])
    (tmp_path / "small").mkdir()
    apply_layer(io.BytesIO(small), tmp_path / "small", mt.OCI_LAYER_TAR)
    assert started == []
    big = make_tar([_dir("d/")] + [_file(f"d/f{i}", b"x") for i in range(layer_apply.HELPER_AFTER + 50)])
    (tmp_path / "big").mkdir()
    apply_layer(io.BytesIO(big), tmp_path / "big", mt.OCI_LAYER_TAR)
    assert started == [1]
    assert len(os.listdir(tmp_path / "big" / "d")) == layer_apply.HELPER_AFTER + 50
    # A decompressing thread takes the spare core: no helper then.
    started.clear()
    (tmp_path / "gz").mkdir()
    apply_layer(io.BytesIO(gzip.compress(big)), tmp_path / "gz", mt.OCI_LAYER_GZIP)
    assert started == []
    # Nor on a busy machine.
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: 0)
    (tmp_path / "busy").mkdir()
    apply_layer(io.BytesIO(big), tmp_path / "busy", mt.OCI_LAYER_TAR)
    assert started == []


def test_spare_cores_are_those_running_nothing_else():
    from builder.cpus import spare_cpus

    cpus = len(os.sched_getaffinity(0))
    assert spare_cpus() <= cpus - 1  # this test runs on one of them


def test_the_helper_runs_without_the_package_on_its_path():
    # It is started as `python -I -S <file>`: the standard library only.
    source = Path(extract_helper.__file__).read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "os", "signal", "struct", "sys"}
