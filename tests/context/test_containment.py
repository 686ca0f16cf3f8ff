"""Property test: whatever the tree, symlinks and sources, nothing outside the context is read."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.context import BuildContext, ContextError

SECRET = b"outside the context: must never be read"
SECRET_DIGEST = "sha256:" + hashlib.sha256(SECRET).hexdigest()

_NAMES = ["a", "b", "c", "..", "."]
_TARGETS = ["/", "..", "../..", "../../..", "a", "/a", "b/c", "../outside", "/etc", "{outside}",
            "{outside}/secret", "../../outside/secret", "."]
_SOURCES = [".", "a", "b", "*", "*/*", "a/*", "../..", "/..", "../outside/secret", "l*", "b/l0",
            "a/../../outside", "[ab]/*", "l0/secret", "l1/..", "/l2/x"]


@st.composite
def trees(draw):
    files = draw(st.lists(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3), max_size=6))
    links = draw(st.lists(st.tuples(st.sampled_from(["", "a/", "b/"]), st.sampled_from(_TARGETS)), max_size=4))
    sources = draw(st.lists(st.sampled_from(_SOURCES), min_size=1, max_size=3))
    return files, links, sources


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_no_selection_reaches_outside(case) -> None:
    files, links, sources = case
    base = Path(tempfile.mkdtemp(prefix="pybuild-contain-"))
    try:
        outside = base / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(SECRET)
        root = base / "ctx"
        root.mkdir()
        for parts in files:
            path = root.joinpath(*parts)
            if any(p.is_file() or p.is_symlink() for p in [root.joinpath(*parts[:i]) for i in range(1, len(parts))]):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text("/".join(parts))
        for i, (where, target) in enumerate(links):
            parent = root / where if where else root
            if not parent.is_dir() or parent.is_symlink():
                continue
            os.symlink(target.format(outside=outside), parent / f"l{i}")
        with BuildContext.from_directory(root) as ctx:
            for source in sources:
                try:
                    selection = ctx.select([source])
                except ContextError:
                    continue  # not found, loops: refusing is always safe
                real_root = os.path.realpath(root)
                for entry in selection.entries:
                    assert entry.content != SECRET_DIGEST
                    where = os.path.realpath(os.path.join(real_root, os.path.dirname(entry.source)))
                    assert where == real_root or where.startswith(real_root + "/"), (source, entry)
                    if entry.type == "file":
                        assert not os.path.islink(os.path.join(real_root, entry.source))
    finally:
        shutil.rmtree(base)


def test_a_dockerignore_exception_cannot_reach_outside(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(SECRET)
    root = tmp_path / "ctx"
    root.mkdir()
    (root / ".dockerignore").write_text("*\n!../secret\n!/../secret\n")
    (root / "keep").write_text("k")
    with BuildContext.from_directory(root) as ctx:
        assert [e.path for e in ctx.select(["."]).entries] == [""]
        for source in ["../secret", "/../secret"]:
            try:
                ctx.select([source])
            except ContextError as exc:
                assert '"/secret" not found' in str(exc)
            else:
                raise AssertionError("selected something outside the context")
