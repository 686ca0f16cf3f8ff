"""Hostile tar archives, end to end through the real CLI (issue #8).

Each archive goes in two ways: as an image layer (an OCI archive crafted here, ``pybuild
load``-ed, then ``pybuild build -o type=local`` of ``FROM`` it, which unpacks every layer)
and as a local tar a ``pybuild build`` ADDs (ADD extracts archives). A few also go through
``pybuild run`` (the store's snapshot unpacking). Unit-level cases live in
tests/image/test_hostile_layers.py; these check the whole path: the error reaching the user
(one line, naming the entry), nothing outside the target changing (a sentinel tree around
it, the host's /etc/passwd, the store staying consistent), and the pybuild process's peak
memory (its own VmHWM: ``getrusage(RUSAGE_CHILDREN)`` would report the pytest process's RSS,
which Linux carries into a child across fork and exec).

Rules checked (see builder/image/layer_apply.py): ``..`` and absolute names and hard links
out of the root are refused; symlinked parents resolve inside the root as in a chroot;
names with NUL are refused, names with newlines extracted as they are; no path goes deeper
than 256 levels, named or through symlinks; sparse entries are refused; a layer may write
at most $PYBUILD_MAX_EXTRACT_BYTES (default 64 GiB) of file content, checked before each
file is written and while streaming, so a decompression bomb fails with a clear error and
bounded memory. Run as a non-root user (a user namespace here), device nodes are skipped and
set-user/group-ID bits dropped, with one warning line.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.image.image_helpers import make_tar

from tests.hardening.conftest import CLI_TIMEOUT, CliResult, assert_store_clean, cli_env, run_pybuild

T0 = 1_700_000_000
PAYLOAD = b"written by a hostile archive\n"
SENTINEL_FILES = {"passwd": b"root:x:0:0:sentinel\n", "secret": b"do not touch\n", "sub/deep/file": b"deep\n"}
BOMB_LIMIT = "256M"


# -- measuring a pybuild process

# Runs the CLI in this interpreter and, at exit, writes the process's own peak RSS (kB).
_MEASURED = """
import atexit, os, sys
def _peak():
    with open('/proc/self/status') as status:
        kb = next(line for line in status if line.startswith('VmHWM:')).split()[1]
    with open(os.environ['PYBUILD_TEST_PEAK_FILE'], 'w') as out:
        out.write(kb)
atexit.register(_peak)
from builder.cli import main
sys.argv[0] = 'pybuild'
raise SystemExit(main(sys.argv[1:]))
"""
NON_ROOT = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]  # no capabilities, euid 1000


@dataclass
class Run:
    result: CliResult
    seconds: float
    peak_mib: float


def measured_pybuild(*args: str | os.PathLike, root: Path, env: dict[str, str] | None = None,
                     prefix: list[str] = ()) -> Run:
    peak_file = root.parent / f"peak-{time.monotonic_ns()}"
    full_env = cli_env(PYBUILD_TEST_PEAK_FILE=str(peak_file), **(env or {}))
    argv = [*prefix, sys.executable, "-c", _MEASURED, "--root", str(root), *map(str, args)]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=full_env)
    seconds = time.perf_counter() - start
    peak = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
    peak_file.unlink(missing_ok=True)
    return Run(CliResult(proc.returncode, proc.stdout, proc.stderr), seconds, peak)


FIGURES: list[tuple[str, str, str, float, float]] = []  # (case, way, outcome, seconds, peak MiB)


@pytest.fixture(scope="module", autouse=True)
def print_figures():
    yield
    if FIGURES:
        print(f"\nhostile archives: {len(FIGURES)} runs, {sum(f[3] for f in FIGURES):.1f} s, "
              f"peak RSS max {max(f[4] for f in FIGURES):.0f} MiB")
        for case, way, outcome, seconds, peak in FIGURES:
            print(f"  {case:<28} {way:<6} {outcome:<9} {seconds:6.2f} s {peak:6.0f} MiB")


# -- crafting archives

def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644,
           **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, T0
    for key, value in fields.items():
        setattr(info, key, value)
    return info


tar_of = make_tar  # an in-memory tar from (TarInfo, bytes) pairs


def raw_header(info: tarfile.TarInfo, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """One header block whose fields (e.g. a size) need not match any data that follows."""
    return info.tobuf(fmt)[-512:]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    """A layer blob: the compressed bytes and the digest of the tar inside (its diffID)."""

    data: bytes
    diff_id: str
    media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"


def gz_layer(tar: bytes) -> Blob:
    return Blob(gzip.compress(tar, 1, mtime=0), sha256(tar))


def oci_archive(path: Path, images: dict[str, list[Blob]]) -> None:
    """An OCI image layout tar holding ``images`` (name:tag -> layers, bottom first)."""
    blobs: dict[str, bytes] = {}
    manifests = []
    for name, layers in images.items():
        for layer in layers:
            blobs[sha256(layer.data)] = layer.data
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}).encode()
        blobs[sha256(config)] = config
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                       "size": len(config)},
            "layers": [{"mediaType": layer.media_type, "digest": sha256(layer.data), "size": len(layer.data)}
                       for layer in layers],
        }).encode()
        blobs[sha256(manifest)] = manifest
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest),
                          "size": len(manifest),
                          "annotations": {"io.containerd.image.name": f"docker.io/library/{name}",
                                          "org.opencontainers.image.ref.name": name.split(":", 1)[1]}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": manifests}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def bomb(kind: str = "gzip", files: int = 16, each: int = 64 << 20) -> tuple[bytes, int]:
    """A compressed tar of ``files`` files of zeros, and the size it inflates to.

    Compressed streams may follow each other (gzip members, bzip2 and xz streams), so the
    zeros are compressed once, 8 MiB at a time, and the stream repeated: quick to make."""
    compress = {"gzip": lambda d: gzip.compress(d, 9, mtime=0), "bzip2": lambda d: bz2.compress(d, 9),
                "xz": lambda d: lzma.compress(d, preset=0)}[kind]
    zeros = compress(bytes(8 << 20)) * (each // (8 << 20))
    parts = []
    for i in range(files):
        info = member(f"zeros/{i:03d}")
        info.size = each
        parts += [compress(info.tobuf(tarfile.GNU_FORMAT)), zeros]
    parts.append(compress(bytes(1024)))
    return b"".join(parts), files * (each + 512) + 1024


# -- the cases

@dataclass
class Case:
    """An archive, and what must happen: refused with ``error`` (a regex on the one error
    line), or extracted with ``check`` run on the output directory."""

    name: str
    archive: Callable[[Path], bytes]            # sentinel dir -> uncompressed tar
    error: str | None = None
    check: Callable[[Path, Path], None] | None = None  # (output root, sentinel dir)
    ways: tuple[str, ...] = ("layer", "add")


def _inside(out: Path, host_path: Path) -> Path:
    return out / str(host_path).lstrip("/")


def check_abs_write_through(out: Path, sentinel: Path) -> None:
    assert os.readlink(out / "a") == str(sentinel)
    assert _inside(out, sentinel / "passwd").read_bytes() == PAYLOAD


def check_rel_write_through(out: Path, sentinel: Path) -> None:
    assert _inside(out, sentinel / "secret").read_bytes() == PAYLOAD


def check_etc(out: Path, sentinel: Path) -> None:
    assert (out / "etc" / "passwd").read_bytes() == PAYLOAD and (out / "e").is_symlink()


def check_newlines(out: Path, sentinel: Path) -> None:
    assert (out / "new\nline").read_bytes() == PAYLOAD
    assert (out / "dir\nname" / "f").read_bytes() == PAYLOAD


def deep_through_symlinks(sentinel: Path) -> bytes:
    # Each name is short and shallow; the symlink makes the path they resolve to 300 deep.
    return tar_of([(member("l", tarfile.SYMTYPE, linkname="x/" * 200), None),
                   (member("l/" + "y/" * 100 + "f"), PAYLOAD)])


def sparse_absurd(sentinel: Path) -> bytes:
    old = member("sparse-old", tarfile.GNUTYPE_SPARSE)
    old.size = 1 << 62
    return raw_header(old) + bytes(1024)


def sparse_pax(sentinel: Path) -> bytes:
    info = member("sparse-pax")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse-pax",
                        "GNU.sparse.realsize": str(1 << 62)}
    return tar_of([(info, b"")])


def absurd_size(sentinel: Path) -> bytes:
    info = member("huge")
    info.size = 1 << 62
    return raw_header(info) + PAYLOAD.ljust(512, b"\0") + bytes(1024)


def nul_name(sentinel: Path) -> bytes:
    info = member("placeholder")
    info.pax_headers = {"path": "evil\0name"}
    return tar_of([(info, PAYLOAD)])


CASES = [
    Case("dotdot", lambda s: tar_of([(member("ok"), b"fine"), (member("../escape-dotdot"), PAYLOAD)]),
         error=r"refusing layer entry '\.\./escape-dotdot': '\.\.' would leave the image root"),
    Case("dotdot-inner", lambda s: tar_of([(member("a/b/../../../escape-inner"), PAYLOAD)]),
         error=r"refusing layer entry 'a/b/\.\./\.\./\.\./escape-inner': '\.\.' would leave"),
    Case("absolute", lambda s: tar_of([(member(str(s / "passwd")), PAYLOAD)]),
         error=r"refusing layer entry '/[^']*/sentinel/passwd': absolute path"),
    Case("symlink-write-through-abs", lambda s: tar_of([
        (member("a", tarfile.SYMTYPE, linkname=str(s)), None), (member("a/passwd"), PAYLOAD)]),
         check=check_abs_write_through),
    Case("symlink-write-through-rel", lambda s: tar_of([
        (member("r", tarfile.SYMTYPE, linkname="../" * 40 + str(s).lstrip("/")), None),
        (member("r/secret"), PAYLOAD)]), check=check_rel_write_through),
    Case("symlink-to-etc", lambda s: tar_of([
        (member("e", tarfile.SYMTYPE, linkname="/etc"), None), (member("e/passwd"), PAYLOAD)]), check=check_etc),
    Case("hardlink-abs", lambda s: tar_of([(member("pw", tarfile.LNKTYPE, linkname="/etc/passwd"), None)]),
         error=r"refusing hard link 'pw' -> '/etc/passwd': target outside the image"),
    Case("hardlink-dotdot", lambda s: tar_of([(member("x", tarfile.LNKTYPE, linkname="../../x"), None)]),
         error=r"refusing hard link 'x' -> '\.\./\.\./x': target outside the image"),
    Case("hardlink-through-symlink", lambda s: tar_of([
        (member("s", tarfile.SYMTYPE, linkname=str(s)), None),
        (member("h", tarfile.LNKTYPE, linkname="s/passwd"), None)]),
         error=r"hard link 'h' -> 's/passwd': target does not exist in the image"),
    Case("nul-in-name", nul_name, error=r"refusing layer entry 'evil\\x00name': NUL in name"),
    Case("newline-in-name", lambda s: tar_of([(member("new\nline"), PAYLOAD), (member("dir\nname/f"), PAYLOAD)]),
         check=check_newlines),
    Case("newline-and-dotdot", lambda s: tar_of([(member("x\n/../../escape-newline"), PAYLOAD)]),
         error=r"refusing layer entry 'x\\n/\.\./\.\./escape-newline': '\.\.' would leave the image root"),
    Case("10000-levels", lambda s: tar_of([(member("a/" * 10_000 + "f"), PAYLOAD)]),
         error=r"refusing layer entry 'a/a/a/[a/]*'\.\.\.: name longer than 4096 bytes"),
    Case("deep-through-symlinks", deep_through_symlinks,
         error=r"refusing layer entry 'l/y/y/[y/]*'\.\.\.: it resolves deeper than 256 levels"),
    Case("sparse-absurd-size", sparse_absurd,
         error=r"refusing layer entry 'sparse-old': sparse files are not supported"),
    Case("sparse-pax", sparse_pax, error=r"refusing layer entry 'sparse-pax': sparse files are not supported"),
    Case("absurd-size", absurd_size,
         error=r"refusing layer entry 'huge': the layer's files exceed 64 GiB \(the limit; "
               r"set \$PYBUILD_MAX_EXTRACT_BYTES to raise it\)"),
]


# -- the world around a target

class World:
    """A store root, a build context, and a sentinel tree beside the output directory."""

    def __init__(self, base: Path, root: Path) -> None:
        self.base = base
        self.root = root
        self.ctx = base / "ctx"
        self.ctx.mkdir()
        self.box = base / "box"
        self.sentinel = self.box / "sentinel"
        for rel, data in SENTINEL_FILES.items():
            path = self.sentinel / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.out = self.box / "out"
        self._before = self._state()

    def _state(self) -> dict:
        tree = {}
        for path in sorted(self.box.rglob("*")):
            if path == self.out or self.out in path.parents:
                continue
            st = path.lstat()
            tree[str(path.relative_to(self.box))] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink, st.st_mtime_ns,
                path.read_bytes() if path.is_file() and not path.is_symlink() else None)
        passwd = Path("/etc/passwd")
        return {"box": tree, "passwd": (hashlib.sha256(passwd.read_bytes()).hexdigest(), passwd.stat().st_nlink,
                                        passwd.stat().st_mtime_ns)}

    def assert_untouched(self, *, also: Path | None = None) -> None:
        """Nothing in the box but the output changed, nor the host's /etc/passwd, and no
        refused entry (they are all named escape-*) was written anywhere under the base
        (store root and context included) or ``also``."""
        assert self._state() == self._before, "a hostile archive changed something outside its target"
        strays = []
        for top in filter(None, (self.base, also)):
            for dirpath, dirnames, filenames in os.walk(top):
                if dirpath == str(self.box):
                    dirnames[:] = [d for d in dirnames if d != self.out.name]  # the output: checked by the case
                strays += [os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith("escape")]
        assert strays == [], f"refused entries were written: {strays}"

    def build(self, dockerfile: str, *, env: dict[str, str] | None = None, prefix: list[str] = ()) -> Run:
        (self.ctx / "Dockerfile").write_text(dockerfile)
        if self.out.exists():
            shutil.rmtree(self.out)
        return measured_pybuild("build", "--progress", "plain", "-o", f"type=local,dest={self.out}", self.ctx,
                                root=self.root, env=env, prefix=prefix)


def error_line(run: Run) -> str:
    """The run's error: exactly one line starting with 'error:', no traceback."""
    assert run.result.returncode != 0, run.result.stdout + run.result.stderr
    assert "Traceback" not in run.result.stderr, run.result.stderr
    lines = [line for line in run.result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.result.stderr
    return lines[0]


def outcome_of(case: Case, world: World, run: Run, way: str) -> None:
    if case.error is not None:
        line = error_line(run)
        assert re.search(case.error, line), line
        # No half-written output either: what was extracted before the refusal is gone.
        assert not world.out.exists() or not any(world.out.iterdir()), sorted(os.listdir(world.out))
        FIGURES.append((case.name, way, "refused", run.seconds, run.peak_mib))
    else:
        assert run.result.returncode == 0, run.result.stderr
        case.check(world.out, world.sentinel)
        FIGURES.append((case.name, way, "contained", run.seconds, run.peak_mib))
    world.assert_untouched()
    assert run.peak_mib < 200, f"peak RSS {run.peak_mib:.0f} MiB"


# -- image layers: one OCI archive holding an image per case, loaded once

@pytest.fixture(scope="module")
def layer_root(tmp_path_factory) -> tuple[Path, Path]:
    """A store root holding ``hostile-<case>:1`` for every case (the layer made against the
    sentinel path the tests use), and that sentinel path's base directory."""
    base = tmp_path_factory.mktemp("hostile-layers")
    sentinel = base / "box" / "sentinel"
    images = {f"hostile-{case.name}:1": [gz_layer(case.archive(sentinel))]
              for case in CASES if "layer" in case.ways}
    images["hostile-gzip-bomb:1"] = [Blob(bomb()[0], "sha256:" + "0" * 64)]  # never reaches the diffID check
    images["hostile-many:1"] = [gz_layer(many_entries())]
    archive = base / "hostile.tar"
    oci_archive(archive, images)
    root = base / "root"
    run_pybuild("load", "-q", "-i", archive, root=root, check=True)
    archive.unlink()
    return base, root


@pytest.fixture
def layer_world(layer_root) -> World:
    base, root = layer_root
    for leftover in ("ctx", "box"):
        shutil.rmtree(base / leftover, ignore_errors=True)
    return World(base, root)


@pytest.mark.parametrize("case", [c for c in CASES if "layer" in c.ways], ids=lambda c: c.name)
def test_hostile_layer(case, layer_world):
    run = layer_world.build(f"FROM hostile-{case.name}:1\n")
    outcome_of(case, layer_world, run, "layer")


# -- ADDed local archives

@pytest.fixture
def add_world(tmp_path) -> World:
    return World(tmp_path, tmp_path / "root")


@pytest.mark.parametrize("case", [c for c in CASES if "add" in c.ways], ids=lambda c: c.name)
def test_hostile_add(case, add_world):
    (add_world.ctx / "payload.tar").write_bytes(case.archive(add_world.sentinel))
    run = add_world.build("FROM scratch\nADD payload.tar /dest/\n")
    if case.check is not None:
        # ADD extracts into its destination directory: that is the archive's root.
        original, case = case, Case(case.name, case.archive, check=lambda out, s: original.check(out / "dest", s))
    outcome_of(case, add_world, run, "add")


# -- decompression bomb

def test_gzip_bomb_layer_is_stopped_at_the_limit_with_bounded_memory(layer_world):
    run = layer_world.build("FROM hostile-gzip-bomb:1\n", env={"PYBUILD_MAX_EXTRACT_BYTES": BOMB_LIMIT})
    line = error_line(run)
    assert "refusing layer entry 'zeros/004': the layer's files exceed 256 MiB" in line, line
    FIGURES.append(("gzip-bomb (1 GiB, >1000x)", "layer", "refused", run.seconds, run.peak_mib))
    layer_world.assert_untouched()
    assert run.peak_mib < 150, f"peak RSS {run.peak_mib:.0f} MiB while inflating a bomb"


@pytest.mark.parametrize("kind, suffix", [("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz")])
def test_compression_bomb_add_is_stopped_at_the_limit_with_bounded_memory(add_world, kind, suffix):
    data, inflated = bomb(kind)
    assert inflated / len(data) > 1000
    (add_world.ctx / f"bomb.tar.{suffix}").write_bytes(data)
    run = add_world.build(f"FROM scratch\nADD bomb.tar.{suffix} /dest/\n", env={"PYBUILD_MAX_EXTRACT_BYTES": BOMB_LIMIT})
    line = error_line(run)
    assert (f"ADD bomb.tar.{suffix} /dest/: refusing layer entry 'zeros/004': "
            "the layer's files exceed 256 MiB") in line, line
    FIGURES.append((f"{kind}-bomb (1 GiB, >1000x)", "add", "refused", run.seconds, run.peak_mib))
    add_world.assert_untouched()
    assert run.peak_mib < 150, f"peak RSS {run.peak_mib:.0f} MiB while inflating a bomb"


# -- many entries

MANY = 100_000


def many_entries() -> bytes:
    """100,000 empty files in 100 directories, headers written directly (fast and small)."""
    from builder.image.tarformat import DIRTYPE, END_OF_ARCHIVE, TarEntry, encode_header

    parts = []
    for d in range(100):
        parts.append(encode_header(TarEntry(f"d{d:02d}/", DIRTYPE, 0o755, mtime=T0)))
        parts.extend(encode_header(TarEntry(f"d{d:02d}/f{i:04d}", mtime=T0)) for i in range(MANY // 100))
    return b"".join(parts) + END_OF_ARCHIVE


@pytest.fixture
def shm_world(layer_root) -> World:
    """Like layer_world, with the box on a tmpfs when there is one: creating 100,000 files is
    disk-bound (GNU tar takes seconds on the CI disk too), which is not what is measured here."""
    base = Path(tempfile.mkdtemp(prefix="hostile-many-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    yield World(base, layer_root[1])
    shutil.rmtree(base, ignore_errors=True)


def test_hundred_thousand_entries_extract_in_bounded_memory(shm_world):
    run = shm_world.build("FROM hostile-many:1\n")
    assert run.result.returncode == 0, run.result.stderr
    assert sum(len(files) for _, _, files in os.walk(shm_world.out)) == MANY
    FIGURES.append(("100,000 entries", "layer", "contained", run.seconds, run.peak_mib))
    shm_world.assert_untouched(also=shm_world.root)
    assert run.peak_mib < 200, f"peak RSS {run.peak_mib:.0f} MiB for 100,000 entries"


# -- devices and set-ID files, as root and as a user without privileges

def special_files(sentinel: Path) -> bytes:
    return tar_of([
        (member("dev", tarfile.DIRTYPE, mode=0o755), None),
        (member("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
        (member("dev/loop0", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0), None),
        (member("dev/fifo", tarfile.FIFOTYPE, mode=0o644), None),
        (member("bin/su", mode=0o4755), PAYLOAD),
        (member("bin/wall", mode=0o2755), PAYLOAD),
        (member("bin/plain", mode=0o755), PAYLOAD),
    ])


@pytest.fixture
def specials_world(tmp_path) -> World:
    world = World(tmp_path, tmp_path / "root")
    tar = special_files(world.sentinel)
    archive = tmp_path / "specials.tar"
    oci_archive(archive, {"hostile-specials:1": [gz_layer(tar)]})
    run_pybuild("load", "-q", "-i", archive, root=world.root, check=True)
    (world.ctx / "specials.tar").write_bytes(tar)
    return world


@pytest.mark.parametrize("way", ["layer", "add"])
def test_non_root_skips_devices_and_drops_set_id_bits_with_a_warning(specials_world, way):
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to run pybuild without privileges")
    dockerfile = "FROM hostile-specials:1\n" if way == "layer" else "FROM scratch\nADD specials.tar /\n"
    run = specials_world.build(dockerfile, prefix=NON_ROOT)
    assert run.result.returncode == 0, run.result.stderr
    warnings = [line for line in run.result.stderr.splitlines() if line.startswith("warning: layer:")]
    assert warnings, run.result.stderr
    assert all("skipped 2 device node(s) and dropped set-user/group-ID bits of 2 file(s) "
               "(not running as root): 'dev/null', 'dev/loop0', 'bin/su', 'bin/wall'" in w for w in warnings)
    out = specials_world.out
    assert sorted(p.name for p in (out / "dev").iterdir()) == ["fifo"]
    assert stat.S_ISFIFO((out / "dev/fifo").lstat().st_mode)
    assert [stat.S_IMODE((out / "bin" / n).stat().st_mode) for n in ("su", "wall", "plain")] == [0o755] * 3
    FIGURES.append(("devices + set-ID, non-root", way, "contained", run.seconds, run.peak_mib))
    specials_world.assert_untouched()


@pytest.mark.skipif(os.geteuid() != 0, reason="creating device nodes needs root")
def test_as_root_devices_and_set_id_bits_are_kept(specials_world):
    run = specials_world.build("FROM hostile-specials:1\n")
    assert run.result.returncode == 0, run.result.stderr
    assert "warning: layer" not in run.result.stderr
    out = specials_world.out
    null = (out / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE((out / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((out / "bin/wall").stat().st_mode) == 0o2755
    FIGURES.append(("devices + set-ID, root", "layer", "kept", run.seconds, run.peak_mib))
    specials_world.assert_untouched()


# -- pybuild run: the store's snapshot unpacking, under a real container

def busybox_layers(busybox_archive: Path) -> list[Blob]:
    with tarfile.open(busybox_archive) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}").read()
        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        return [Blob(blob(d["digest"]), diff_id, d["mediaType"])
                for d, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"])]


def test_pybuild_run_unpacks_hostile_layers_inside_the_rootfs(tmp_path, busybox_archive):
    world = World(tmp_path, tmp_path / "root")
    base = busybox_layers(busybox_archive)
    through = gz_layer(tar_of([(member("a", tarfile.SYMTYPE, linkname=str(world.sentinel)), None),
                               (member("a/passwd"), PAYLOAD)]))
    escape = gz_layer(tar_of([(member("../../escape-run"), PAYLOAD)]))
    archive = tmp_path / "run.tar"
    oci_archive(archive, {"hostile-run-ok:1": base + [through], "hostile-run-bad:1": base + [escape]})
    run_pybuild("load", "-q", "-i", archive, root=world.root, check=True)

    run = measured_pybuild("run", "--rm", "hostile-run-ok:1", "cat", str(world.sentinel / "passwd"), root=world.root)
    assert run.result.returncode == 0, run.result.stderr
    assert run.result.stdout.encode() == PAYLOAD  # the image's copy, not the host's sentinel
    FIGURES.append(("symlink-write-through-abs", "run", "contained", run.seconds, run.peak_mib))

    run = measured_pybuild("run", "--rm", "hostile-run-bad:1", "true", root=world.root)
    line = error_line(run)
    assert "refusing layer entry '../../escape-run': '..' would leave the image root" in line, line
    FIGURES.append(("dotdot", "run", "refused", run.seconds, run.peak_mib))
    world.assert_untouched()
    assert_store_clean(world.root)


def test_the_store_is_consistent_after_every_refused_layer(layer_root):
    _, root = layer_root
    assert_store_clean(root)
