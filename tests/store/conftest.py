"""Store fixtures: a fresh store per test, and the busybox fixture image (made once per session).

Other test packages import these: ``from tests.store.conftest import store, busybox_archive, busybox_image``.
"""
from __future__ import annotations

import importlib.util
import os
import stat
import hashlib
from pathlib import Path

import pytest

from builder.store import ContentStore, Image

REPO = Path(__file__).resolve().parents[2]
MAKE_BUSYBOX = REPO / "fixtures" / "busybox" / "make_busybox.py"


def load_make_busybox():
    """The fixture script as a module (it lives outside the package)."""
    spec = importlib.util.spec_from_file_location("make_busybox", MAKE_BUSYBOX)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def store(tmp_path) -> ContentStore:
    with ContentStore(tmp_path / "store") as s:
        yield s


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory) -> Path:
    """An OCI-layout tar of the busybox image, named busybox:latest."""
    if not Path("/bin/busybox").is_file():
        pytest.fail("/bin/busybox is missing: apt-get install busybox-static")
    out = tmp_path_factory.mktemp("busybox") / "busybox-oci.tar"
    assert load_make_busybox().main(["-o", str(out)]) == 0
    return out


@pytest.fixture
def busybox_image(store, busybox_archive) -> Image:
    """busybox:latest loaded into this test's store."""
    from builder.exporter import load_archive

    load_archive(store, busybox_archive)
    return store.get_image("busybox")


def tree_of(root: Path) -> dict[str, tuple]:
    """A comparable picture of a directory tree: per path its type, mode, owner, size and content or link."""
    out: dict[str, tuple] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                            hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[rel] = ("other", st.st_mode, st.st_rdev)
    return out
