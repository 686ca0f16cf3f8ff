"""Copying a selection into a staging directory: the bytes that were digested, nothing else."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.context import BuildContext, ContextError
from builder.context.materialize import copy_selection
from builder.context.source import Entry, Selection


def listing(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_text()
    return out


def test_copy_writes_what_was_selected(tree, tmp_path: Path) -> None:
    root = tree({".dockerignore": "**/*.log\n", "app/main.py": "main", "app/lib/u.py": "u",
                 "app/debug.log": "x", "app/link": ("->", "main.py")})
    os.chmod(root / "app" / "main.py", 0o750)
    with BuildContext.from_directory(root) as ctx:
        selection = ctx.select(["app"])
        stats = copy_selection(selection, tmp_path / "out", chown=(0, 0))
    assert listing(tmp_path / "out") == {"lib": "dir", "lib/u.py": "u", "main.py": "main", "link": "-> main.py"}
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "main.py").st_mode) == 0o750
    assert (stats.files, stats.bytes) == (2, 5)
    # source mtimes are kept
    assert os.stat(tmp_path / "out" / "lib" / "u.py").st_mtime_ns == os.stat(root / "app/lib/u.py").st_mtime_ns


def test_chown_and_chmod_apply_to_everything(tree, tmp_path: Path) -> None:
    root = tree({"d/f": "f", "d/sub/g": "g"})
    with BuildContext.from_directory(root) as ctx:
        copy_selection(ctx.select(["d"]), tmp_path / "out", chown=(1000, 2000), chmod=0o700)
    for rel in ["f", "sub", "sub/g"]:
        st = os.lstat(tmp_path / "out" / rel)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o700)


def test_a_file_changed_after_selection_is_refused(tree, tmp_path: Path) -> None:
    root = tree({"a.txt": "original"})
    with BuildContext.from_directory(root) as ctx:
        selection = ctx.select(["a.txt"])
    (root / "a.txt").write_text("edited after the cache key was computed")
    with pytest.raises(ContextError, match="'a.txt' changed during the build"):
        copy_selection(selection, tmp_path / "out")
    assert not (tmp_path / "out" / "a.txt").exists()


def test_a_symlink_from_one_source_is_never_written_through_by_another(tree, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tree({"one/x": ("->", str(outside)), "two/x/planted": "p"})
    with BuildContext.from_directory(root) as ctx:
        selection = ctx.select(["one", "two"])
    copy_selection(selection, tmp_path / "out")
    assert list(outside.iterdir()) == []
    assert (tmp_path / "out" / "x").is_dir() and not (tmp_path / "out" / "x").is_symlink()
    assert (tmp_path / "out" / "x" / "planted").read_text() == "p"


def test_unsafe_entry_paths_are_refused(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    for bad in ["../escape", "/abs", "a/../../b", "a//b"]:
        entry = Entry(bad, ".", "dir", 0o755, 0, 0)
        with pytest.raises(ContextError, match="unsafe path"):
            copy_selection(Selection(tmp_path, (entry,)), tmp_path / "out")
    assert st.st_ino == os.stat(tmp_path).st_ino


def test_read_only_directories_still_receive_their_contents(tree, tmp_path: Path) -> None:
    root = tree({"ro/inner/file": "f"})
    os.chmod(root / "ro" / "inner", 0o555)
    with BuildContext.from_directory(root) as ctx:
        copy_selection(ctx.select(["ro"]), tmp_path / "out")
    assert (tmp_path / "out" / "inner" / "file").read_text() == "f"
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "inner").st_mode) == 0o555


def test_a_later_source_replaces_an_earlier_one_of_another_type(tree, tmp_path: Path) -> None:
    root = tree({"one/x/inner": "i", "two/x": "now a file", "three/x/again": "a dir again"})
    with BuildContext.from_directory(root) as ctx:
        copy_selection(ctx.select(["one", "two"]), tmp_path / "a")
        copy_selection(ctx.select(["two", "three"]), tmp_path / "b")
    assert (tmp_path / "a" / "x").read_text() == "now a file"
    assert (tmp_path / "b" / "x" / "again").read_text() == "a dir again"


def test_a_write_failure_is_one_clear_error(tree, tmp_path: Path) -> None:
    root = tree({"f": "f"})
    (tmp_path / "blocker").write_text("a file where the target directory should be")
    with BuildContext.from_directory(root) as ctx:
        with pytest.raises(ContextError, match="cannot write"):
            copy_selection(ctx.select(["f"]), tmp_path / "blocker" / "out")
