"""The metadata cache: unchanged files are not read again, and a change is never missed."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from builder.context import BuildContext, MetadataCache
from builder.context.metacache import RACY_NS, is_racy, stat_key
from tests.context.conftest import make_tree, sha


def build(root: Path, cache: Path, *patterns: str):
    """One 'build': a fresh BuildContext over the same cache directory."""
    with BuildContext.from_directory(root, cache_dir=cache) as ctx:
        selection = ctx.select(list(patterns) or ["."])
        return selection, ctx.stats


def age_past_racy_window() -> None:
    time.sleep(RACY_NS / 1e9 + 0.05)


@pytest.fixture
def aged_tree(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "ctx", {f"src/f{i}.txt": f"content {i}" for i in range(50)})
    age_past_racy_window()
    return root


def test_a_second_build_reads_no_unchanged_file(aged_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, stats = build(aged_tree, cache)
    assert (stats.files_hashed, stats.cache_hits) == (50, 0)
    second, stats = build(aged_tree, cache)
    assert (stats.files_hashed, stats.bytes_read, stats.cache_hits) == (0, 0, 50)
    assert second.digest == first.digest


def test_an_edit_is_seen_even_when_mtime_is_put_back(aged_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, _ = build(aged_tree, cache)
    victim = aged_tree / "src" / "f7.txt"
    old = os.stat(victim)
    victim.write_text("content X")  # same size
    os.utime(victim, ns=(old.st_atime_ns, old.st_mtime_ns))  # touch -d back to the old time
    assert os.stat(victim).st_mtime_ns == old.st_mtime_ns and os.stat(victim).st_size == old.st_size
    second, stats = build(aged_tree, cache)
    assert stats.files_hashed == 1  # the ctime moved, so only that file was read
    assert second.changed(first.files)["changed"] == ["src/f7.txt"]
    assert second.files["src/f7.txt"] != first.files["src/f7.txt"]
    entry = next(e for e in second.entries if e.source == "src/f7.txt")
    assert entry.content == sha("content X")


def test_a_replaced_file_with_identical_times_is_read_again(aged_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(aged_tree, cache)
    victim = aged_tree / "src" / "f3.txt"
    old = os.stat(victim)
    replacement = aged_tree / "new.tmp"
    replacement.write_text("content Z")
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, victim)  # new inode
    second, stats = build(aged_tree, cache, "src")
    assert stats.files_hashed == 1
    assert next(e for e in second.entries if e.source == "src/f3.txt").content == sha("content Z")


def test_files_changed_just_now_are_not_trusted(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"fresh.txt": "new"})
    cache = tmp_path / "cache"
    build(root, cache)
    _, stats = build(root, cache)
    assert stats.files_hashed == 1  # too fresh to record: hashed again
    key = stat_key(os.stat(root / "fresh.txt"))
    assert is_racy(key, time.time_ns())
    assert not is_racy(key, time.time_ns() + RACY_NS + 1)


def test_a_damaged_database_is_set_aside_and_rebuilt(aged_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "metadata.db").write_bytes(b"this is not sqlite" * 100)
    first, stats = build(aged_tree, cache)
    assert stats.files_hashed == 50
    assert list(cache.glob("metadata.damaged-*"))
    _, stats = build(aged_tree, cache)
    assert stats.cache_hits == 50


def test_entries_are_keyed_by_absolute_path_and_can_be_pruned(aged_tree: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    build(aged_tree, cache_dir)
    with MetadataCache(cache_dir) as cache:
        known = cache.load_tree(aged_tree)
        assert len(known) == 50 and all(p.startswith(str(aged_tree) + "/") for p in known)
        assert cache.load_tree(tmp_path / "elsewhere") == {}
        keep = {str(aged_tree / "src" / "f1.txt")}
        assert cache.forget_missing(aged_tree, keep) == 49
        assert set(cache.load_tree(aged_tree)) == keep


def _build_in_child(args: tuple[str, str, str]) -> str:
    root, cache, pattern = args
    with BuildContext.from_directory(root, cache_dir=cache) as ctx:
        return ctx.select([pattern]).digest


def test_concurrent_builds_share_the_cache_safely(aged_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # Eight builds at once, each hashing a different part of the tree: their
    # writes must merge, not overwrite each other.
    jobs = [(str(aged_tree), str(cache), f"src/f*{digit}.txt") for digit in "01234567"]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        digests = pool.map(_build_in_child, jobs)
    assert len(set(digests)) == 8
    db = sqlite3.connect(cache / "metadata.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with MetadataCache(cache) as reopened:
        assert len(reopened.load_tree(aged_tree)) == 40
    _, stats = build(aged_tree, cache)
    assert (stats.files_hashed, stats.cache_hits) == (10, 40)


def test_processes_creating_the_cache_together_lose_nothing(tmp_path: Path) -> None:
    # A build and its context helper (or two builds) may both open a store's cache for the
    # first time: neither may call the other's half-made database damaged, nor migrate away
    # what the other has just saved.
    for round_ in range(10):
        cache = tmp_path / f"cache{round_}"
        pids = []
        for k in range(8):
            pid = os.fork()
            if pid == 0:
                try:
                    with MetadataCache(cache) as mc:
                        mc.load_relative("/tree")
                        mc.record("/tree", f"f{k}", (1, 1, 1, 1, 1), sha(str(k)), now_ns=1 << 62)
                finally:
                    os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        assert not list(cache.glob("metadata.damaged-*"))
        with MetadataCache(cache) as mc:
            assert len(mc.load_relative("/tree")) == 8


def test_large_files_are_streamed_and_hashed_in_parallel(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    blobs = {}
    for i in range(3):
        data = os.urandom(1 << 20) * 3 + bytes([i])  # 3 MiB + 1: the streaming path
        (root / f"big{i}.bin").write_bytes(data)
        blobs[f"big{i}.bin"] = sha(data)
    with BuildContext.from_directory(root, workers=3) as ctx:
        s = ctx.select(["."])
    assert {e.path: e.content for e in s.entries if e.type == "file"} == blobs


def test_a_full_walk_forgets_deleted_files(aged_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(aged_tree, cache)
    for i in range(10):
        (aged_tree / "src" / f"f{i}.txt").unlink()
    build(aged_tree, cache, "src")  # a partial selection forgets nothing
    with MetadataCache(cache) as reopened:
        assert len(reopened.load_tree(aged_tree)) == 50
    build(aged_tree, cache)
    with MetadataCache(cache) as reopened:
        assert len(reopened.load_tree(aged_tree)) == 40


def test_a_file_with_a_future_mtime_is_still_cached(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"from-the-future.txt": "x"})
    future = time.time_ns() + 10 * 365 * 86400 * 10**9
    os.utime(root / "from-the-future.txt", ns=(future, future))
    age_past_racy_window()
    cache = tmp_path / "cache"
    build(root, cache)
    _, stats = build(root, cache)
    assert (stats.files_hashed, stats.cache_hits) == (0, 1)
