"""Differential test: what ``COPY`` takes from a context, here and in buildah.

buildah (a real, independent Dockerfile builder, installed by .ci/install)
builds ``FROM scratch`` + ``COPY <sources> /out/`` over the same context and
``.dockerignore``; the files it copies (names, types, modes, contents, link
targets) must be exactly the entries ``BuildContext.select`` returns.
Cases where BuildKit and buildah are known to differ are not in the table:
moby's patternmatcher (Docker, BuildKit) treats ``**.txt`` as a plain
suffix test, so it ignores ``a.txt``; buildah's copy of the matcher does
not (test_dockerignore.py pins Docker's behaviour).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.context import BuildContext, ContextError
from builder.context.rmtree import remove_tree
from tests.context.conftest import make_tree

BUILDAH = shutil.which("buildah")
pytestmark = [
    pytest.mark.skipif(BUILDAH is None, reason="buildah is not installed (bash .ci/install installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah needs root here"),
]

TREE = {
    "Dockerfile.src": "unused",
    "app.py": "app", "README.md": "readme", "notes.md": "notes", "a.txt": "a", "b.txt": "b", "c.dat": "c",
    "debug.log": "log", "src/main.py": "main", "src/util.py": "util", "src/data.txt": "data",
    "src/deep/x.log": "deep log", "src/deep/y.py": "y", "docs/guide.md": "guide", "docs/keep.md": "keep",
    "docs/img/logo.png": "png", "node_modules/pkg/index.js": "js", "web/node_modules/lib.js": "lib",
    "vendor/keep/LICENSE": "license", "vendor/drop/code.go": "go", "link.txt": ("->", "a.txt"),
    "src/out": ("->", "/etc/passwd"),
}

CASES = [
    # (.dockerignore, COPY sources)
    ("", ["."]),
    ("*.log\n", ["."]),
    ("**/*.log\n", ["."]),
    ("*.md\n!README.md\n", ["."]),
    ("vendor\n!vendor/keep\n", ["."]),
    ("*\n!src\n!*.txt\n", ["."]),
    ("**/node_modules\n", ["."]),
    ("docs/**\n!docs/keep.md\n", ["."]),
    ("/app.py\n./a.txt\nsrc/\n", ["."]),
    ("[ab].txt\n", ["."]),
    ("src/*.py\n", ["."]),
    ("# comment\n\n  *.dat  \n", ["."]),
    ("", ["src/*.py"]),
    ("", ["*.txt", "src"]),
    ("", ["src/../docs"]),
    ("", ["[ab].txt", "c.???"]),
    ("", ["link.txt"]),
    ("**/*.log\n", ["src"]),
    ("src/deep\n", ["src/*"]),  # src/out points out of the context: both refuse
    ("src/out\n", ["src/*"]),
    ("", ["src/out"]),
    ("**/*.txt\n", ["."]),
    ("!a.txt\n*.txt\n", ["."]),
    ("*.txt\n!a.txt\n", ["*.txt"]),
    ("", ["nothing-here"]),
]


class BuildahFailed(Exception):
    pass


@pytest.fixture(scope="module")
def buildah(tmp_path_factory):
    state = tmp_path_factory.mktemp("buildah")
    base = [BUILDAH, "--storage-driver", "vfs", "--root", str(state / "root"), "--runroot", str(state / "run")]

    def run(*args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run(base + list(args), capture_output=True, text=True, cwd=cwd, timeout=120)
        if proc.returncode != 0:
            raise BuildahFailed(proc.stderr[-2000:])
        return proc.stdout.strip()

    yield run
    subprocess.run(base + ["rm", "--all"], capture_output=True, timeout=120)
    subprocess.run(base + ["rmi", "--all", "--force"], capture_output=True, timeout=120)
    remove_tree(state, ignore_errors=True)


def copied_by_buildah(buildah, context: Path, sources: list[str]) -> set[tuple] | None:
    """What buildah's COPY wrote, or None if its build failed."""
    dockerfile = context.parent / "Dockerfile"
    quoted = ", ".join(f'"{s}"' for s in sources)
    dockerfile.write_text(f"FROM scratch\nCOPY [{quoted}, \"/out/\"]\n")
    try:
        image = buildah("build", "-q", "--layers=false", "-f", str(dockerfile), str(context))
    except BuildahFailed:
        return None
    container = buildah("from", image)
    try:
        mount = Path(buildah("mount", container)) / "out"
        found = set()
        for dirpath, dirnames, filenames in os.walk(mount):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                found.add(describe(str(path.relative_to(mount)), path))
        return found
    finally:
        buildah("umount", container)
        buildah("rm", container)


def describe(rel: str, path: Path) -> tuple:
    st = os.lstat(path)
    if path.is_symlink():
        return (rel, "symlink", os.readlink(path))
    if path.is_dir():
        return (rel, "dir", oct(st.st_mode & 0o7777))
    return (rel, "file", oct(st.st_mode & 0o7777), "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())


def copied_by_us(context: Path, sources: list[str]) -> set[tuple] | None:
    """What our selection holds, or None if it was refused."""
    with BuildContext.from_directory(context) as ctx:
        try:
            selection = ctx.select(sources)
        except ContextError:
            return None
    found = set()
    for e in selection.entries:
        if e.path == "":
            continue  # the destination itself
        if e.type == "symlink":
            found.add((e.path, "symlink", e.linkname))
        elif e.type == "dir":
            found.add((e.path, "dir", oct(e.mode)))
        else:
            found.add((e.path, "file", oct(e.mode), e.content))
    return found


@pytest.mark.parametrize("ignore,sources", CASES, ids=[f"{i}:{c[1]}" for i, c in enumerate(CASES)])
def test_copy_takes_what_buildah_takes(buildah, tmp_path: Path, ignore: str, sources: list[str]) -> None:
    context = make_tree(tmp_path / "ctx", TREE)
    os.chmod(context / "src" / "main.py", 0o755)
    if ignore:
        (context / ".dockerignore").write_text(ignore)
    ours = copied_by_us(context, sources)
    theirs = copied_by_buildah(buildah, context, sources)
    assert ours == theirs
    if ignore == "" and sources == ["."]:
        assert ours and len(ours) > 20  # the comparison is not vacuous
