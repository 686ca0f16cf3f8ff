"""Helpers shared by the runtime tests (not fixtures)."""
from __future__ import annotations


def mount_table(mountinfo: str) -> list[tuple[str, ...]]:
    """mountinfo without what differs between two runs (mount ids, anonymous device numbers)."""
    rows = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        rows.append((f[3], f[4], f[5], *r))
    return rows


def store_image(store_root, rootfs, name: str, **container_config) -> str:
    """Put ``rootfs`` into the content store at ``store_root`` as a one-layer image tagged ``name``.

    ``container_config`` are ContainerConfig fields (entrypoint, cmd, env, user, ...).
    Returns the image id.
    """
    import io

    from builder.image.layer_writer import write_layer
    from builder.image.oci import ContainerConfig, ImageConfig, Platform, RootFS
    from builder.store import ContentStore

    buf = io.BytesIO()
    blob = write_layer(rootfs, buf, compression="gzip")
    buf.seek(0)
    with ContentStore(store_root) as store:
        store.put_blob(buf, blob.digest)
        store.record_layer(blob.digest, blob.diff_id, blob.media_type)
        host = Platform.host()
        config = ImageConfig(architecture=host.architecture, os=host.os,
                             config=ContainerConfig(**container_config), rootfs=RootFS(diff_ids=[blob.diff_id]))
        return store.put_image(config, [blob.descriptor()], name=name).id


def mounts_under(*prefixes) -> list[str]:
    """This host's mount points under any of ``prefixes`` (other builds may mount elsewhere meanwhile)."""
    from pathlib import Path

    wanted = tuple(str(p) for p in prefixes)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(wanted):
            points.append(point)
    return points
