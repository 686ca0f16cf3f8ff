"""The same Dockerfile built by pybuild and by `buildah bud` gives the same tree and config."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.build.conftest import image_tree

BASE = "localhost/busybox:latest"
DOCKERFILE = f"""\
FROM {BASE}
ENV APP=/srv/app GREETING=hi
WORKDIR $APP
COPY data.txt ./
COPY --chown=65534:65534 --chmod=0640 secret.conf /etc/app.conf
RUN mkdir -p /srv/app/logs && echo "$GREETING" > /srv/app/greeting && ln -s greeting /srv/app/link \\
    && rm /etc/group && chmod 0700 /srv/app/logs
USER 65534:65534
EXPOSE 8080/tcp 53/udp
LABEL org.example.a=1 org.example.b="two words"
VOLUME /srv/app/logs
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting"]
"""
# Mount points buildah leaves in the image for its RUN containers (BuildKit and pybuild don't).
BUILDAH_MOUNTPOINTS = {"dev", "proc", "sys", "run", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
# Healthcheck is checked on its own: Debian's buildah 1.28 drops it from the image config even
# with --format docker (seen here), so it cannot serve as the reference for that field.
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
                 "StopSignal")


def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                what = ("file", path.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir",)
            else:
                what = ("other", st.st_mode)
            out[rel] = (*what, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@pytest.fixture
def buildah_store(tmp_path, busybox_archive):
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed (.ci/install installs it)")
    root, run = tmp_path / "buildah", tmp_path / "buildah-run"
    spec = f"containers-storage:[overlay@{root}+{run}]"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{busybox_archive}", spec + BASE], check=True)
    yield root, run, spec
    subprocess.run(["buildah", "--root", str(root), "--runroot", str(run), "rmi", "-a", "-f"], capture_output=True)
    subprocess.run(["umount", "-R", str(root)], capture_output=True)


def test_same_tree_and_config_as_buildah(bbuilder, buildah_store, tmp_path):
    root, run, spec = buildah_store
    bbuilder.write("data.txt", "some data\n")
    bbuilder.write("secret.conf", "key=value\n")
    bbuilder.write("Dockerfile", DOCKERFILE)
    store = bbuilder.store()
    try:
        store.tag("busybox:latest", BASE)
    finally:
        store.close()
    image_id, _ = bbuilder.build()
    ours = tree(image_tree(bbuilder, image_id, tmp_path / "ours"))
    our_config = bbuilder.config(image_id)["config"]

    subprocess.run(["buildah", "--root", str(root), "--runroot", str(run), "--storage-driver", "overlay",
                    "bud", "--layers", "--format", "docker", "--runtime", "/usr/sbin/runc", "-q",
                    "-t", "parity:1", str(bbuilder.context)], check=True, capture_output=True)
    layout = tmp_path / "theirs-oci"
    subprocess.run(["skopeo", "copy", "-q", spec + "localhost/parity:1", f"oci:{layout}:x"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:x", str(tmp_path / "bundle")], check=True,
                   capture_output=True)
    theirs = tree(tmp_path / "bundle" / "rootfs")
    for extra in BUILDAH_MOUNTPOINTS:
        entry = theirs.get(extra)
        if entry is not None and (entry[0] == "dir" or entry[1] == b""):
            del theirs[extra]
    assert ours == theirs
    their_config = json.loads(subprocess.run(
        ["skopeo", "inspect", "--config", spec + "localhost/parity:1"], check=True, capture_output=True,
        text=True).stdout)["config"]
    their_config.get("Labels", {}).pop("io.buildah.version", None)
    assert {k: our_config.get(k) for k in CONFIG_FIELDS} == {k: their_config.get(k) for k in CONFIG_FIELDS}
    assert our_config["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 2}
