"""COPY/ADD source selection: Docker's rules, and nothing outside the context."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from builder.context import BuildContext, ContextError, SourceNotFound, tree_selection
from tests.context.conftest import make_tree, sha


def paths(selection) -> list[str]:
    return [e.path for e in selection.entries]


def select(root: Path, *patterns: str, **kw):
    with BuildContext.from_directory(root) as ctx:
        return ctx.select(list(patterns), **kw)


# -- what a source means ------------------------------------------------------

def test_a_directory_source_means_its_contents(tree) -> None:
    root = tree({"app/main.py": "print()", "app/lib/util.py": "x = 1", "other.txt": "o"})
    s = select(root, "app")
    assert paths(s) == ["", "lib", "lib/util.py", "main.py"]
    assert s.entries[0].type == "dir" and s.entries[0].source == "app"
    assert s.matches[0].is_dir


def test_a_file_source_lands_under_its_own_name(tree) -> None:
    root = tree({"deep/down/file.txt": "hello"})
    s = select(root, "deep/down/file.txt")
    (entry,) = s.entries
    assert (entry.path, entry.source, entry.type) == ("file.txt", "deep/down/file.txt", "file")
    assert entry.content == sha("hello") and entry.size == 5


def test_dot_selects_the_whole_context(tree) -> None:
    root = tree({"a": "1", "b/c": "2", ".hidden": "3"})
    assert paths(select(root, ".")) == ["", ".hidden", "a", "b", "b/c"]
    assert paths(select(root, "./")) == paths(select(root, "/"))


def test_several_sources_keep_their_order(tree) -> None:
    root = tree({"z.txt": "z", "a.txt": "a"})
    s = select(root, "z.txt", "a.txt")
    assert paths(s) == ["z.txt", "a.txt"]
    assert [m.paths for m in s.matches] == [("z.txt",), ("a.txt",)]
    assert [(m.types, m.wildcard) for m in s.matches] == [(("file",), False), (("file",), False)]


# -- wildcards ------------------------------------------------------------------

def test_wildcards_follow_go_filepath_match(tree) -> None:
    root = tree({"src/a.py": "a", "src/b.py": "b", "src/c.txt": "c", "src/sub/d.py": "d",
                 "file1.txt": "1", "file2.txt": "2", "fileX.txt": "x", ".env": "e"})
    assert paths(select(root, "src/*.py")) == ["a.py", "b.py"]
    assert paths(select(root, "file[0-9].txt")) == ["file1.txt", "file2.txt"]
    assert paths(select(root, "file?.txt")) == ["file1.txt", "file2.txt", "fileX.txt"]
    assert paths(select(root, "*/d.py")) == []  # * stays within one element
    assert paths(select(root, "src/*/d.py")) == ["d.py"]
    assert ".env" in paths(select(root, "*"))  # * matches dot files, as in Go


def test_a_wildcard_matching_a_directory_copies_its_contents(tree) -> None:
    root = tree({"pkg1/a": "a", "pkg2/b": "b"})
    assert paths(select(root, "pkg*")) == ["", "a", "", "b"]


def test_a_wildcard_that_matches_nothing_selects_nothing_like_buildkit(tree) -> None:
    root = tree({"a.txt": "a"})
    s = select(root, "*.nope")
    assert s.entries == () and s.matches[0].paths == ()
    with pytest.raises(SourceNotFound, match=r'"/\*.nope" not found'):
        select(root, "*.nope", allow_empty_wildcard=False)


def test_a_missing_literal_source_is_an_error_naming_it(tree) -> None:
    root = tree({"a.txt": "a"})
    with pytest.raises(SourceNotFound) as info:
        select(root, "nope/file.txt")
    assert str(info.value) == 'failed to compute cache key: "/nope/file.txt" not found'


def test_escaped_wildcard_characters_are_literal(tree) -> None:
    root = tree({"a*b": "star", "axb": "x"})
    assert [e.source for e in select(root, "a*b").entries] == ["a*b", "axb"]
    # without any unescaped wildcard the source is a literal name, backslash included (BuildKit)
    with pytest.raises(SourceNotFound):
        select(root, "a\\*b")
    make_tree(root, {"a\\*b": "backslash"})
    assert [e.source for e in select(root, "a\\*b").entries] == ["a\\*b"]
    # with another wildcard present, the escape is honoured
    assert [e.source for e in select(root, "[a]\\*b").entries] == ["a*b"]


# -- never outside the context --------------------------------------------------

@pytest.mark.parametrize("pattern", ["../../../../etc/passwd", "/etc/passwd", "/../../etc/passwd",
                                     "sub/../../../etc/passwd"])
def test_climbing_out_is_clamped_to_the_context(tree, pattern: str) -> None:
    root = tree({"sub/x": "x"})
    with pytest.raises(SourceNotFound, match='"/etc/passwd" not found'):
        select(root, pattern)
    make_tree(root, {"etc/passwd": "the context's own passwd"})
    (entry,) = select(root, pattern).entries
    assert entry.source == "etc/passwd" and entry.content == sha("the context's own passwd")


def test_symlinks_inside_a_directory_are_copied_as_links_never_read(tree) -> None:
    root = tree({"app/ok.txt": "ok", "app/passwd": ("->", "/etc/passwd"),
                 "app/up": ("->", "../../../../../etc"), "app/rel": ("->", "ok.txt")})
    with BuildContext.from_directory(root) as ctx:
        s = ctx.select(["app"])
        by_path = {e.path: e for e in s.entries}
        assert by_path["passwd"].type == "symlink" and by_path["passwd"].linkname == "/etc/passwd"
        assert by_path["up"].type == "symlink" and by_path["up"].content == ""
        assert by_path["rel"].linkname == "ok.txt"
        assert ctx.stats.bytes_read == 2  # only ok.txt was read


def test_a_symlink_named_as_source_is_followed_inside_the_context_only(tree) -> None:
    root = tree({"real/data.txt": "data", "link": ("->", "real/data.txt"),
                 "abs": ("->", "/real/data.txt"), "out": ("->", "/etc/passwd"),
                 "climb": ("->", "../../../../real/data.txt"), "dirlink": ("->", "real")})
    (entry,) = select(root, "link").entries
    assert (entry.path, entry.source, entry.content) == ("link", "real/data.txt", sha("data"))
    # an absolute target is taken from the context root, ".." stops at the root
    assert select(root, "abs").entries[0].source == "real/data.txt"
    assert select(root, "climb").entries[0].source == "real/data.txt"
    with pytest.raises(SourceNotFound, match='"/out" not found'):
        select(root, "out")
    assert paths(select(root, "dirlink")) == ["", "data.txt"]
    assert select(root, "dirlink/data.txt").entries[0].source == "real/data.txt"


def test_wildcard_matches_that_are_symlinks_are_followed_too(tree) -> None:
    root = tree({"real.txt": "r", "l1.lnk": ("->", "real.txt"), "l2.lnk": ("->", "/etc/hostname")})
    with pytest.raises(SourceNotFound, match='"/l2.lnk" not found'):
        select(root, "*.lnk")
    os.unlink(root / "l2.lnk")
    (entry,) = select(root, "*.lnk").entries
    assert (entry.path, entry.source) == ("l1.lnk", "real.txt")


def test_a_symlink_loop_is_a_clear_error(tree) -> None:
    root = tree({"a": ("->", "b"), "b": ("->", "a")})
    with pytest.raises(ContextError, match="too many levels of symbolic links"):
        select(root, "a")


# -- .dockerignore ----------------------------------------------------------------

def test_ignored_files_are_invisible(tree) -> None:
    root = tree({".dockerignore": "*.log\nsecrets/\n", "app.py": "x", "debug.log": "l",
                 "secrets/key": "k", "sub/trace.log": "nested logs are not matched by *.log"})
    assert paths(select(root, ".")) == ["", ".dockerignore", "app.py", "sub", "sub/trace.log"]
    assert paths(select(root, "*")) == [".dockerignore", "app.py", "", "trace.log"]
    with pytest.raises(SourceNotFound) as info:
        select(root, "secrets/key")
    assert ".dockerignore" in info.value.hint


def test_exceptions_re_include_under_ignored_directories(tree) -> None:
    root = tree({".dockerignore": "vendor\n!vendor/keep\n", "vendor/keep/a": "a",
                 "vendor/drop/b": "b", "vendor/c": "c"})
    assert paths(select(root, "vendor")) == ["", "keep", "keep/a"]
    assert "vendor/drop" not in [e.source for e in select(root, ".").entries]
    assert paths(select(root, "vendor/keep/a")) == ["a"]
    with pytest.raises(SourceNotFound):
        select(root, "vendor/c")


def test_an_ignored_symlink_cannot_be_followed(tree) -> None:
    root = tree({".dockerignore": "hidden-link\n", "real.txt": "r", "hidden-link": ("->", "real.txt")})
    with pytest.raises(SourceNotFound):
        select(root, "hidden-link")


def test_a_named_dockerfile_ignore_file_takes_precedence(tree) -> None:
    root = tree({".dockerignore": "a.txt\n", "ci/app.Dockerfile": "FROM scratch\n",
                 "ci/app.Dockerfile.dockerignore": "b.txt\n", "a.txt": "a", "b.txt": "b"})
    with BuildContext.from_directory(root, dockerfile=root / "ci/app.Dockerfile") as ctx:
        assert [e.path for e in ctx.select(["*.txt"]).entries] == ["a.txt"]
    with BuildContext.from_directory(root) as ctx:
        assert [e.path for e in ctx.select(["*.txt"]).entries] == ["b.txt"]


# -- COPY --exclude and --parents ------------------------------------------------

def test_exclude_patterns_apply_below_each_source(tree) -> None:
    root = tree({"app/a.py": "a", "app/a.tmp": "t", "app/cache/x": "x", "app/sub/b.tmp": "t",
                 "top.tmp": "t", "top.py": "p"})
    s = select(root, "app", excludes=["*.tmp", "cache"])
    assert paths(s) == ["", "a.py", "sub", "sub/b.tmp"]
    assert paths(select(root, "top.*", excludes=["*.tmp"])) == ["top.py"]


def test_parents_keep_the_path_from_the_root_or_from_the_pivot(tree) -> None:
    root = tree({"x/y/a.txt": "a", "x/y/b.txt": "b", "x/z/c.txt": "c"})
    s = select(root, "x/*/*.txt", parents=True)
    assert [e.path for e in s.entries if e.type == "file"] == ["x/y/a.txt", "x/y/b.txt", "x/z/c.txt"]
    assert {e.path for e in s.entries if e.type == "dir"} == {"x", "x/y", "x/z"}
    s = select(root, "x/./y/a.txt", parents=True)
    assert [e.path for e in s.entries] == ["y", "y/a.txt"]


# -- special files and errors --------------------------------------------------------

def test_fifos_are_entries_and_sockets_are_skipped(tree) -> None:
    root = tree({"d/f.txt": "f"})
    os.mkfifo(root / "d" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "d" / "sock"))
    try:
        s = select(root, "d")  # must not block on the FIFO
        assert [(e.path, e.type) for e in s.entries] == [("", "dir"), ("f.txt", "file"), ("pipe", "fifo")]
        assert paths(select(root, "d/pipe")) == ["pipe"]
        with pytest.raises(ContextError, match="it is a socket"):
            select(root, "d/sock")
    finally:
        sock.close()


# The interpreter lives under /root, so everything is imported before dropping to "nobody".
UNREADABLE_SCRIPT = """
import os, sys
import concurrent.futures.thread
from builder.context import BuildContext
from builder.errors import PybuildError
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    BuildContext.from_directory(sys.argv[1]).select([sys.argv[2]])
except PybuildError as exc:
    print(exc.render()); sys.exit(3)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_an_unreadable_file_or_directory_is_a_clear_error() -> None:
    root = Path(tempfile.mkdtemp(prefix="pybuild-ctx-"))
    try:
        os.chmod(root, 0o755)
        make_tree(root, {"ok.txt": "ok", "secret.txt": "s", "locked/inner": "i"})
        os.chmod(root / "secret.txt", 0o600)
        os.chmod(root / "locked", 0o700)
        for source, expected in [("secret.txt", "cannot read 'secret.txt' from the build context: Permission denied"),
                                 (".", "cannot read directory 'locked' in the build context: Permission denied")]:
            proc = subprocess.run([sys.executable, "-c", UNREADABLE_SCRIPT, str(root), source],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 3, proc.stderr
            assert proc.stdout.splitlines()[0] == f"error: {expected}"
            assert "Traceback" not in proc.stdout + proc.stderr
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_a_missing_or_non_directory_context_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="does not exist"):
        BuildContext.from_directory(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContextError, match="is not a directory"):
        BuildContext.from_directory(tmp_path / "file")


# -- digests ----------------------------------------------------------------------------

def test_digest_covers_content_names_modes_and_ownership_but_not_mtimes(tree) -> None:
    root = tree({"app/a.txt": "a", "app/b.txt": "b"})
    base = select(root, "app")
    os.utime(root / "app" / "a.txt", (1, 1))
    assert select(root, "app").digest == base.digest  # mtime alone changes nothing

    (root / "app" / "a.txt").write_text("A")
    changed = select(root, "app")
    assert changed.digest != base.digest
    assert changed.changed(base.files) == {"added": [], "removed": [], "changed": ["app/a.txt"]}
    (root / "app" / "a.txt").write_text("a")
    assert select(root, "app").digest == base.digest

    os.chmod(root / "app" / "b.txt", 0o755)
    assert select(root, "app").changed(base.files)["changed"] == ["app/b.txt"]
    os.chmod(root / "app" / "b.txt", 0o644)

    os.chown(root / "app" / "b.txt", 1234, 1234)
    assert select(root, "app").changed(base.files)["changed"] == ["app/b.txt"]
    os.chown(root / "app" / "b.txt", 0, 0)
    assert select(root, "app").digest == base.digest

    os.rename(root / "app" / "b.txt", root / "app" / "c.txt")
    renamed = select(root, "app")
    assert renamed.changed(base.files) == {"added": ["app/c.txt"], "removed": ["app/b.txt"], "changed": []}


def test_changing_an_ignored_file_changes_nothing(tree) -> None:
    root = tree({".dockerignore": "*.log\n", "app.py": "x", "debug.log": "1"})
    before = select(root, ".")
    (root / "debug.log").write_text("a lot more log output")
    (root / "new.log").write_text("new")
    assert select(root, ".").digest == before.digest


def test_the_same_tree_elsewhere_has_the_same_digest(tmp_path: Path) -> None:
    spec = {"a/b.txt": "b", "c": ("->", "a/b.txt"), "d/": None}
    one = tree_selection(make_tree(tmp_path / "one", spec))
    two = tree_selection(make_tree(tmp_path / "two", spec))
    assert one.digest == two.digest and one.files == two.files


def test_tree_selection_ignores_no_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "stage", {".dockerignore": "*\n", "bin/app": "elf"})
    assert [e.path for e in tree_selection(root).entries] == ["", ".dockerignore", "bin", "bin/app"]


def test_entries_record_modes_and_types(tree) -> None:
    root = tree({"bin/tool": "#!/bin/sh\n", "etc/": None})
    os.chmod(root / "bin" / "tool", 0o4755)
    s = select(root, ".")
    by_path = {e.path: e for e in s.entries}
    assert by_path["bin/tool"].mode == 0o4755
    assert by_path["etc"].type == "dir" and stat.S_IMODE(os.stat(root / "etc").st_mode) == by_path["etc"].mode


def test_fingerprints_say_what_a_report_can_show(tree) -> None:
    root = tree({"bin/tool": "x", "ln": ("->", "bin/tool")})
    os.chmod(root / "bin" / "tool", 0o755)
    files = select(root, ".").files
    assert files["bin/tool"] == f"file 755 0:0 {sha('x')}"
    assert files["ln"] == "symlink 777 0:0 -> bin/tool"
    assert files["bin"].startswith("dir ")


def test_a_very_deep_tree_is_walked_without_recursion(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    deep = str(root)
    os.mkdir(deep)
    for _ in range(1500):  # deeper than Python's recursion limit (os.makedirs recurses)
        deep += "/d"
        os.mkdir(deep)
    Path(deep + "/leaf").write_text("bottom")
    (root / ".dockerignore").write_text("d\n!**/leaf\n")
    s = select(root, ".")
    assert s.entries[-1].source.endswith("/d/leaf") and s.entries[-1].content == sha("bottom")
    assert len(s.entries) == 1 + 1 + 1500 + 1  # root, .dockerignore, 1500 dirs, leaf
    from builder.context import copy_selection
    from builder.context.rmtree import remove_tree
    copy_selection(s, tmp_path / "out")
    assert Path(str(tmp_path / "out") + "/d" * 1500 + "/leaf").read_text() == "bottom"
    for tree_root in (root, tmp_path / "out"):  # pytest's own cleanup would recurse
        remove_tree(tree_root)
        assert not tree_root.exists()


def test_selections_from_several_threads_agree(tree) -> None:
    from concurrent.futures import ThreadPoolExecutor

    root = tree({f"d{i}/f{j}": f"{i}-{j}" for i in range(4) for j in range(50)})
    with BuildContext.from_directory(root) as ctx:
        expected = {f"d{i}": ctx.select([f"d{i}"]).digest for i in range(4)}
    with BuildContext.from_directory(root) as ctx, ThreadPoolExecutor(4) as pool:
        got = dict(zip(expected, pool.map(lambda d: ctx.select([d]).digest, list(expected) * 1)))
    assert got == expected
