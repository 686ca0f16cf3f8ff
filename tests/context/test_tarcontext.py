"""A context sent as a tar stream: extracted safely, hostile entries refused."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.context import BuildContext, ContextError, UnsafeArchive
from tests.context.conftest import sha


def tar_bytes(entries: list[tuple[str, object]], *, compress: bool = False) -> bytes:
    """entries: (name, content bytes | "dir" | ("sym", target) | ("hard", target) | ("fifo",) | ("chr",))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, value in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if value == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif isinstance(value, tuple) and value[0] == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
            elif isinstance(value, tuple) and value[0] == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, value[1]
            elif isinstance(value, tuple) and value[0] == "fifo":
                info.type = tarfile.FIFOTYPE
            elif isinstance(value, tuple) and value[0] == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            else:
                data = value if isinstance(value, bytes) else str(value).encode()
                info.size, info.mode = len(data), 0o640
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return gzip.compress(raw) if compress else raw


def open_tar(entries, **kw) -> BuildContext:
    return BuildContext.from_tar(io.BytesIO(tar_bytes(entries, compress=kw.pop("compress", False))), **kw)


def test_a_tar_context_behaves_like_a_directory(tmp_path: Path) -> None:
    entries = [("app", "dir"), ("app/main.py", b"print(1)"), ("app/link", ("sym", "main.py")),
               ("app/same", ("hard", "app/main.py")), (".dockerignore", b"*.log\n"), ("x.log", b"l"),
               ("pipe", ("fifo",))]
    with open_tar(entries, tmp_dir=tmp_path, compress=True) as ctx:
        root = ctx.root
        s = ctx.select(["."])
        by_path = {e.path: e for e in s.entries}
        assert by_path["app/main.py"].content == sha("print(1)") and by_path["app/main.py"].mode == 0o640
        assert by_path["app/link"].linkname == "main.py"
        assert by_path["app/same"].content == sha("print(1)")
        assert by_path["pipe"].type == "fifo"
        assert "x.log" not in by_path
    assert not root.exists()  # close() removed the extraction


def test_the_dockerfile_specific_ignore_file_inside_the_tar_wins(tmp_path: Path) -> None:
    entries = [(".dockerignore", b"a\n"), ("build.Dockerfile.dockerignore", b"b\n"), ("a", b"a"), ("b", b"b")]
    with open_tar(entries, tmp_dir=tmp_path, dockerfile_name="build.Dockerfile") as ctx:
        assert [e.path for e in ctx.select(["a"]).entries] == ["a"]
        with pytest.raises(ContextError):
            ctx.select(["b"])


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../evil", "/../evil"])
def test_entries_climbing_out_are_refused(tmp_path: Path, name: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchive, match="points outside the context"):
        open_tar([(name, b"x")], tmp_dir=work)
    assert not (tmp_path / "evil").exists()
    assert list(work.iterdir()) == []  # the partial extraction is gone


def test_absolute_names_land_inside_the_context(tmp_path: Path) -> None:
    with open_tar([("/etc/pybuild-test-should-not-exist", b"x")], tmp_dir=tmp_path) as ctx:
        assert (ctx.root / "etc" / "pybuild-test-should-not-exist").read_bytes() == b"x"
    assert not Path("/etc/pybuild-test-should-not-exist").exists()


def test_nothing_is_written_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(UnsafeArchive, match="not a directory"):
        open_tar([("link", ("sym", str(outside))), ("link/planted", b"x")], tmp_dir=tmp_path)
    assert list(outside.iterdir()) == []


def test_a_file_entry_replaces_an_earlier_symlink_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    with open_tar([("f", ("sym", str(victim))), ("f", b"replacement")], tmp_dir=tmp_path) as ctx:
        assert not (ctx.root / "f").is_symlink()
        assert (ctx.root / "f").read_bytes() == b"replacement"
    assert victim.read_text() == "original"


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd", "missing"])
def test_hard_links_must_point_at_an_earlier_file_inside(tmp_path: Path, target: str) -> None:
    with pytest.raises(UnsafeArchive):
        open_tar([("h", ("hard", target))], tmp_dir=tmp_path)


def test_device_nodes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="device node"):
        open_tar([("null", ("chr",))], tmp_dir=tmp_path)


def test_not_a_tar_and_too_large_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not a tar archive"):
        BuildContext.from_tar(io.BytesIO(b"definitely not a tar file" * 40), tmp_dir=tmp_path)
    with pytest.raises(ContextError, match="larger than the limit"):
        open_tar([("a", b"x" * 1000), ("b", b"y" * 1000)], tmp_dir=tmp_path, max_bytes=1500)
    truncated = tar_bytes([("a", b"x" * 5000)])[:3000]
    with pytest.raises(ContextError, match="damaged"):
        BuildContext.from_tar(io.BytesIO(truncated), tmp_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_symlinks_pointing_out_stay_links_and_are_not_followed_by_copy(tmp_path: Path) -> None:
    with open_tar([("d", "dir"), ("d/out", ("sym", "/etc/passwd"))], tmp_dir=tmp_path) as ctx:
        (entry,) = [e for e in ctx.select(["d"]).entries if e.path == "out"]
        assert entry.type == "symlink" and entry.content == ""
        with pytest.raises(ContextError, match="not found"):
            ctx.select(["d/out"])
        assert os.readlink(ctx.root / "d" / "out") == "/etc/passwd"


def test_a_very_deep_hostile_archive_is_cleaned_up(tmp_path: Path) -> None:
    name = "/".join(["d"] * 1200)
    entries = [(name + "/f", b"x"), ("../escape", b"y")]  # deep, then refused
    with pytest.raises(UnsafeArchive):
        open_tar(entries, tmp_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_context_streams_from_a_pipe_like_stdin(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tar_bytes([("src", "dir"), ("src/a.py", b"a" * 300_000), (".dockerignore", b"*.tmp\n"), ("x.tmp", b"x")],
                     compress=True)
    script = ("import sys; from builder.context import BuildContext\n"
              "with BuildContext.from_tar(sys.stdin.buffer, tmp_dir=sys.argv[1]) as ctx:\n"
              "    print(' '.join(e.path for e in ctx.select(['.']).entries))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == [".dockerignore", "src", "src/a.py"]
    assert list(tmp_path.iterdir()) == []
