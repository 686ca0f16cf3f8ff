"""Secrets: what pybuild guarantees about a ``--secret`` value, checked on every byte written.

The guarantee (README, "Building images"): a secret given with ``--secret id=ID,src=FILE``
or ``id=ID,env=VAR`` reaches a RUN step only as the ``--mount=type=secret`` file (on a
tmpfs, removed after the step) or ``env=`` variable. It is never in a layer, the store's
index or cache, the report, the metadata file or any output, and the output of RUN steps is
masked (``****``) before the progress display, a failed step's error and the report see it.
BuildKit does not mask output; pybuild does. The one way into the image is a RUN that
writes the value into the file system: that layer stores it, as the Dockerfile asked.

Each case runs a real build and then looks for the value (and its base64 and hex) in every
file under the store root (gzip layers and tar outputs opened), in each output
(``type=oci``, ``docker``, ``local``), the ``--report``, ``--metadata-file`` and
``--iidfile`` files, ``reports/last.json``, the exported build cache, the captured
``--progress plain`` or ``json`` output, and ``/dev/shm`` (where secret files live during a
step). ``EXTRA_OUTPUTS`` lists flags and the paths they write: add a row for a new exporter.
"""
from __future__ import annotations

import base64
import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hardening.conftest import cli_env, loaded_root, run_pybuild  # noqa: F401  (fixture)


@dataclass(frozen=True)
class ExtraOutput:
    """Build flags that write something, and the paths they write (under a given dir)."""

    name: str
    flags: Callable[[Path], list[str]]
    paths: Callable[[Path], list[Path]]
    on_failure: bool = False  # also written when the build fails


EXTRA_OUTPUTS = [
    ExtraOutput("oci", lambda d: ["-o", f"type=oci,dest={d / 'image-oci.tar'}"], lambda d: [d / "image-oci.tar"]),
    ExtraOutput("docker", lambda d: ["-o", f"type=docker,dest={d / 'image-docker.tar'}"],
                lambda d: [d / "image-docker.tar"]),
    ExtraOutput("local", lambda d: ["-o", f"type=local,dest={d / 'rootfs'}"], lambda d: [d / "rootfs"]),
    ExtraOutput("report", lambda d: ["--report", str(d / "report.json")], lambda d: [d / "report.json"], True),
    ExtraOutput("metadata", lambda d: ["--metadata-file", str(d / "meta.json"), "--iidfile", str(d / "iid")],
                lambda d: [d / "meta.json", d / "iid"]),
    ExtraOutput("cache-to", lambda d: ["--cache-to", f"type=local,dest={d / 'cache'},mode=max"],
                lambda d: [d / "cache"]),
    ExtraOutput("inline-cache", lambda d: ["--cache-to", "type=inline"], lambda d: []),
]

# Dockerfile bodies after "FROM busybox". ``stores`` marks the one case that writes the
# secret into the image on purpose.
CASES = {
    "read-to-dev-null": (
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null\n"
        "RUN --mount=type=secret,id=tok,target=/opt/custom,mode=0444,uid=1 test -s /opt/custom\n"
        "RUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && test ! -e /run/secrets/tok\n"
        "RUN --mount=type=secret,id=tok,required=true sha256sum /run/secrets/tok > /digest\n"
        "RUN test ! -e /run/secrets/tok && test ! -e /opt/custom\n"),
    "printed": (
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok; echo; base64 /run/secrets/tok; "
        "xxd -p /run/secrets/tok\n"
        "RUN --mount=type=secret,id=tok,env=TOK echo \"the token is $TOK\" >&2\n"),
    "printed-then-failing": (
        "RUN --mount=type=secret,id=tok echo \"token: $(cat /run/secrets/tok)\"; base64 /run/secrets/tok; exit 3\n"),
    "written-then-failing": (
        "RUN --mount=type=secret,id=tok cp /run/secrets/tok /leak && cat /leak && false\n"),
    "stored-on-purpose": (
        "RUN --mount=type=secret,id=tok cp /run/secrets/tok /stored\n"
        "RUN cat /stored\n"),
}
FAILS = {"printed-then-failing", "written-then-failing"}
STORES = {"stored-on-purpose"}


def secret_forms(secret: bytes) -> list[bytes]:
    return [secret, base64.b64encode(secret), secret.hex().encode()]


def log_forms(secret: bytes) -> list[bytes]:
    """For captured output, also every 16-character piece of the encodings: a tool that wraps
    its output (``xxd -p`` at 60 columns) prints them split over lines."""
    pieces = [form[i:i + 16] for form in secret_forms(secret)[1:] for i in range(len(form) - 15)]
    return secret_forms(secret) + pieces


def scan(data: bytes, forms: list[bytes], where: str, found: list[str], depth: int = 0) -> None:
    """Record where in ``data`` a form is: in the bytes, or in a member of a tar or gzip in it."""
    if depth < 4 and data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
            where += "!gunzip"
        except (OSError, EOFError):
            pass
    if depth < 4 and len(data) > 512 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                if any(form in member.name.encode() for form in forms):
                    found.append(f"{where}!{member.name} (name)")
                if member.isfile():
                    scan(tar.extractfile(member).read(), forms, f"{where}!{member.name}", found, depth + 1)
        return
    if any(form in data for form in forms):
        found.append(where)


def scan_tree(top: Path, forms: list[bytes], found: list[str]) -> None:
    if not os.path.lexists(top):
        return
    if not top.is_dir() or top.is_symlink():
        if stat.S_ISREG(os.lstat(top).st_mode):
            scan(top.read_bytes(), forms, str(top), found)
        return
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = Path(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                scan(path.read_bytes(), forms, str(path), found)


def _shm_snapshot() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("form,progress", [("src", "plain"), ("env", "json")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_secret_is_nowhere_it_should_not_be(tmp_path, loaded_root, case, form, progress):  # noqa: F811
    secret = b"pb-secret-" + os.urandom(16).hex().encode()
    forms = secret_forms(secret)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\n" + CASES[case])
    env = cli_env()
    if form == "src":
        (tmp_path / "tok").write_bytes(secret)
        spec = f"id=tok,src={tmp_path / 'tok'}"
    else:
        env["PB_TEST_TOKEN"] = secret.decode()
        spec = "id=tok,env=PB_TEST_TOKEN"
    out = tmp_path / "out"
    out.mkdir()
    flags = [f for extra in EXTRA_OUTPUTS for f in extra.flags(out)]
    shm_before = _shm_snapshot()
    result = run_pybuild("build", "--progress", progress, "--secret", spec, "-t", "secret-test", *flags, ctx,
                         root=loaded_root, env=env)
    shm_new = _shm_snapshot() - shm_before

    if case in FAILS:
        assert result.returncode == 1, result.stderr
        assert "did not complete successfully" in result.stderr
        assert "****" in result.stdout + result.stderr  # the output was there, masked
    else:
        assert result.returncode == 0, result.stderr
    if case == "printed":
        assert (result.stdout + result.stderr).count("****") >= 4

    found: list[str] = []
    for text, name in ((result.stdout, "stdout"), (result.stderr, "stderr")):
        scan(text.encode(), log_forms(secret), f"<{progress} {name}>", found)
    for extra in EXTRA_OUTPUTS:
        for path in extra.paths(out):
            scan_tree(path, forms, found)
    scan_tree(loaded_root, forms, found)
    for name in shm_new:
        scan_tree(Path("/dev/shm", name), forms, found)
    assert not [n for n in shm_new if n.startswith("pybuild-secrets-")], shm_new

    if case not in STORES:
        assert found == [], f"the secret leaked into: {found}"
        return
    # The deliberate copy: in the image's layer (and what holds its files), nowhere else.
    assert found, "the copied secret is not in the image: the scan would miss a leak"
    allowed = ("/blobs/sha256/", "/snapshots/", "image-oci.tar!", "image-docker.tar!", "/rootfs/stored",
               "/cache/blobs/sha256/")
    stray = [where for where in found if not any(a in where for a in allowed)]
    assert stray == [], f"besides the image layer, the secret is in: {stray}"
    assert (out / "rootfs" / "stored").read_bytes() == secret
    for must_be_clean in ("report.json", "meta.json", "index.db", "last.json"):
        assert not [w for w in found if must_be_clean in w]


def test_missing_required_secret_fails_clearly(tmp_path, loaded_root):  # noqa: F811
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=secret,id=tok,required=true true\n")
    result = run_pybuild("build", "--progress", "plain", ctx, root=loaded_root)
    assert result.returncode == 1
    assert "secret tok is required but was not given" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("spec,message", [
    ("id=tok,src=/nonexistent/file", "cannot read /nonexistent/file"),
    ("id=tok,env=PB_TEST_UNSET_VARIABLE", "environment variable PB_TEST_UNSET_VARIABLE is not set"),
    ("src=", "give id=ID and src=FILE or env=VAR"),
])
def test_bad_secret_flags_fail_clearly(tmp_path, loaded_root, spec, message):  # noqa: F811
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=secret,id=tok true\n")
    result = run_pybuild("build", "--progress", "plain", "--secret", spec, ctx, root=loaded_root)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
