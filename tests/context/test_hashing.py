"""Hashing a context's files: in a tight loop, shared with a forked child while a core
idles, without touching access times where the reader may ask for that."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from builder.context import hashing
from builder.context.hashing import FileHasher
from tests.context.conftest import make_tree, sha


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """The pids of the hashing children forked while a test runs."""
    from builder.context import forked

    pids: list[int] = []
    real = forked.fork_worker

    def counting(work, **kwargs):
        started = real(work, **kwargs)
        if started is not None:
            pids.append(started[0])
        return started

    monkeypatch.setattr(forked, "fork_worker", counting)
    return pids


def split_digests(root: Path, files: list) -> list[str]:
    split = FileHasher(root)
    split.split_small = True
    return [d for d, _ in split.digests(files)]


def test_split_hashing_shares_the_files_with_a_child_while_a_core_idles(tmp_path: Path, monkeypatch, forks) -> None:
    root = make_tree(tmp_path / "t", {f"f{i:05d}": os.urandom(i % 3000) for i in range(2500)})
    files = sorted((p.name, os.lstat(p)) for p in root.iterdir())
    alone = [d for d, _ in FileHasher(root).digests(files)]
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: 1)
    assert split_digests(root, files) == alone
    assert len(forks) == 1


def test_split_hashing_forks_no_child_while_the_cores_are_busy(tmp_path: Path, monkeypatch, forks) -> None:
    root = make_tree(tmp_path / "t", {f"f{i:05d}": os.urandom(i % 3000) for i in range(2500)})
    files = sorted((p.name, os.lstat(p)) for p in root.iterdir())
    alone = [d for d, _ in FileHasher(root).digests(files)]
    looks: list[int] = []
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: looks.append(1) or 0)
    assert split_digests(root, files) == alone
    assert forks == []
    assert len(looks) > 5  # it kept looking for an idle core as it went


def test_split_hashing_forks_late_once_a_core_frees_up(tmp_path: Path, monkeypatch, forks) -> None:
    root = make_tree(tmp_path / "t", {f"f{i:05d}": os.urandom(i % 3000) for i in range(2500)})
    files = sorted((p.name, os.lstat(p)) for p in root.iterdir())
    alone = [d for d, _ in FileHasher(root).digests(files)]
    looks: list[int] = []
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: looks.append(1) or (1 if len(looks) > 3 else 0))
    assert split_digests(root, files) == alone
    assert len(forks) == 1 and len(looks) == 5  # two idle looks in a row, then no more looking


def test_split_hashing_takes_no_single_idle_moment_for_an_idle_core(tmp_path: Path, monkeypatch, forks) -> None:
    root = make_tree(tmp_path / "t", {f"f{i:05d}": os.urandom(i % 3000) for i in range(2500)})
    files = sorted((p.name, os.lstat(p)) for p in root.iterdir())
    looks: list[int] = []
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: looks.append(1) or len(looks) % 2)  # 1, 0, 1, 0...
    split_digests(root, files)
    assert forks == [] and len(looks) > 5


def test_with_big_files_on_threads_the_split_is_decided_before_they_start(tmp_path: Path, monkeypatch,
                                                                           forks) -> None:
    tree = {f"f{i:05d}": os.urandom(i % 3000) for i in range(2500)}
    tree.update({f"big{i}": os.urandom(300_000) for i in range(3)})
    root = make_tree(tmp_path / "t", tree)
    files = sorted((p.name, os.lstat(p)) for p in root.iterdir())
    alone = [d for d, _ in FileHasher(root).digests(files)]
    looks: list[int] = []
    monkeypatch.setattr("builder.cpus.spare_cpus", lambda: looks.append(1) or 0)
    assert split_digests(root, files) == alone
    assert forks == [] and looks == [1]  # one look, before the pool: forking later would not be safe


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hash as another user")
def test_a_file_someone_else_owns_is_hashed_without_o_noatime() -> None:
    """O_NOATIME is refused (EPERM) on files the reader does not own: hashing drops it and
    reads on. Checked for real, in a child running as nobody."""
    top = Path(tempfile.mkdtemp(prefix="noatime-"))
    try:
        top.chmod(0o755)
        (top / "f").write_bytes(b"root's file\n")
        (top / "f").chmod(0o644)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                os.setgid(65534)
                os.setuid(65534)
                digest, _ = hashing.hash_file(str(top / "f"), "f", os.lstat(top / "f"))
                os.write(write_fd, f"{digest} {hashing._OPEN_FLAGS & hashing._NOATIME}".encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read().decode()
        os.waitpid(pid, 0)
        assert answer == sha(b"root's file\n") + " 0"
    finally:
        shutil.rmtree(top)
