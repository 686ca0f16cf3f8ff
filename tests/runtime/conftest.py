"""Fixtures for the runtime tests: a busybox rootfs, bundles from `runc spec`, runners.

The rootfs is Debian's static busybox with one symlink per applet; it is made
once per session and shared read-only by every bundle (configs point
root.path at it). Bundles start from the config.json that the real
``runc spec`` writes, then each test edits what it is about.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

BUSYBOX = Path("/bin/busybox")
PYBUILD_RUNC = [sys.executable, "-m", "builder.runtime.cli"]


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed (see .ci/install)")
    return path


def make_busybox_rootfs(root: Path) -> Path:
    """A minimal rootfs: busybox, its applets, /etc/passwd and /etc/group."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            (root / "bin" / name).symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev", "root", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    (root / "etc" / "secret").write_text("top secret\n")
    (root / "secretdir").mkdir()
    (root / "secretdir" / "key").write_text("key material\n")
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.exists():
        pytest.fail("/bin/busybox missing: install busybox-static")
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def public_rootfs() -> Path:
    """A busybox rootfs every user can reach (for user namespaces mapping root elsewhere)."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="pybuild-public-rootfs-"))
    os.chmod(base, 0o755)
    root = make_busybox_rootfs(base / "rootfs")
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def runc_spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The config.json `runc spec` writes, made by the real runc."""
    need("runc")
    d = tmp_path_factory.mktemp("runcspec")
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    return json.loads((d / "config.json").read_text())


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Runtime:
    """One runtime's command line and its own state directory."""

    name: str
    argv: list[str]
    state_root: Path

    def __call__(self, *args: str, timeout: float = 30, input: str | None = None) -> Result:
        proc = subprocess.run([*self.argv, "--root", str(self.state_root), *args], capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def detached(self, *args: str, timeout: float = 30) -> Result:
        """For create / run -d: the container keeps our stdio, so give it files, not pipes."""
        self.state_root.mkdir(parents=True, exist_ok=True)
        out_path, err_path = self.state_root.parent / "detached.out", self.state_root.parent / "detached.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.run([*self.argv, "--root", str(self.state_root), *args], stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        return Result(proc.returncode, out_path.read_text(), err_path.read_text())


@pytest.fixture
def pybuild_runc(tmp_path: Path) -> Runtime:
    return Runtime("pybuild-runc", PYBUILD_RUNC, tmp_path / "state-pybuild")


@pytest.fixture
def runc(tmp_path: Path) -> Runtime:
    return Runtime("runc", [need("runc")], tmp_path / "state-runc")


BundleMaker = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path, runc_spec: dict) -> BundleMaker:
    """make_bundle(args, edit=None, rootfs=None) -> bundle dir whose config.json came from `runc spec`."""
    counter = iter(range(1000))

    def make(args: list[str], edit: Callable[[dict], None] | None = None, rootfs: Path | None = None) -> Path:
        bundle = tmp_path / f"bundle{next(counter)}"
        bundle.mkdir()
        doc = json.loads(json.dumps(runc_spec))
        doc["process"]["terminal"] = False
        doc["process"]["args"] = args
        doc["root"]["path"] = str(rootfs or busybox_rootfs)
        if edit is not None:
            edit(doc)
        (bundle / "config.json").write_text(json.dumps(doc, indent=1))
        return bundle

    return make


@pytest.fixture(scope="session")
def ocivalidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/runtime/ocivalidate built against Debian's runtime-tools `validate` package."""
    go = need("go")
    gopath = Path("/usr/share/gocode")
    if not (gopath / "src/github.com/opencontainers/runtime-tools/validate").is_dir():
        pytest.fail("golang-github-opencontainers-runtime-tools-dev is not installed (see .ci/install)")
    out = tmp_path_factory.mktemp("ocivalidate") / "ocivalidate"
    env = dict(os.environ, GOPATH=str(gopath), GO111MODULE="off", GOFLAGS="")
    subprocess.run([go, "build", "-o", str(out), "."], cwd=Path(__file__).parent / "ocivalidate", env=env,
                   check=True, capture_output=True, timeout=600)
    return out
