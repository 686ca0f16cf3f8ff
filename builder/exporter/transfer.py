"""``load`` and ``save``: move images between the store and archive files, format auto-detected."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from builder.exporter.archive import ArchiveError, DirLayout, TarArchive
from builder.exporter.errors import ExportError
from builder.exporter.docker_archive import is_docker_archive, load_docker_archive, save_docker_archive
from builder.exporter.model import ExportItem, LoadedImage
from builder.exporter.oci_layout import is_oci_layout, load_oci_layout, save_oci_layout
from builder.image import mediatypes as mt
from builder.image.layer import source_date_epoch_from_env
from builder.image.oci import Platform
from builder.store import ContentStore
from builder.store.gc import collect
from builder.store.names import InvalidReferenceError, parse_reference

FORMATS = ("oci", "docker")


def load_archive(store: ContentStore, source: str | os.PathLike | BinaryIO) -> list[LoadedImage]:
    """Load every image in an OCI-layout or docker-archive tar (plain, gzip or zstd; a file or a
    stream such as standard input), or in an OCI layout directory, into ``store``."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        layout = DirLayout(Path(source))
        if not is_oci_layout(layout):
            raise ArchiveError(f"{source} is a directory but not an OCI image layout (no oci-layout/index.json)")
        return load_oci_layout(store, layout)
    archive = TarArchive(store, _label(source))
    try:
        with store.lease(), _opened(source) as stream:
            archive.read(stream)
            if is_oci_layout(archive):
                return load_oci_layout(store, archive)
            if is_docker_archive(archive):
                return load_docker_archive(store, archive)
            raise ArchiveError(f"{_label(source)} is neither an OCI image layout (no oci-layout/index.json) "
                               "nor a docker-archive (no manifest.json)")
    except BaseException:
        # What this load brought in and nothing uses goes now (unless other work holds a lease).
        collect(store, set(archive.ingested))
        raise


@contextmanager
def _opened(source) -> Iterator[BinaryIO]:
    if not isinstance(source, (str, os.PathLike)):
        yield source
        return
    path = Path(source)
    if not path.exists():
        raise ArchiveError(f"{path}: no such file")
    if not path.is_file():
        raise ArchiveError(f"{path}: not a regular file")
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        yield fh


def _label(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "standard input"


def export_items(store: ContentStore, images: list[str], fmt: str,
                 platform: Platform | None = None) -> list[ExportItem]:
    """What to write for each IMAGE argument: a name saves that name, an ID saves every name of the image."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown archive format {fmt!r}: expected one of {', '.join(FORMATS)}")
    items: dict[str, ExportItem] = {}
    for text in images:
        digest = store.resolve(text)
        names = _name_given(text, store.names_of(digest))
        if fmt == "docker":
            image = store.get_image(text, platform)
            key, media_type = image.manifest_digest, image.manifest.media_type
        else:
            record = store.index.image(digest)
            key, media_type = digest, record.media_type if record else mt.OCI_MANIFEST
        item = items.setdefault(key, ExportItem(key, media_type))
        for name in names:
            if name not in item.names:
                item.names.append(name)
    return list(items.values())


def _name_given(text: str, names: list[str]) -> list[str]:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return names
    if ref.digest is None and str(ref) in names:
        return [str(ref)]
    return names


def save_archive(store: ContentStore, images: list[str], out: BinaryIO, fmt: str = "oci",
                 platform: Platform | None = None) -> list[ExportItem]:
    """Write ``images`` to ``out`` as one archive; with SOURCE_DATE_EPOCH the tar's mtimes are that time."""
    items = export_items(store, images, fmt, platform)
    mtime = source_date_epoch_from_env() or 0
    with store.lease():
        if fmt == "oci":
            save_oci_layout(store, items, out, mtime)
        else:
            save_docker_archive(store, items, out, mtime)
    return items


def save_to_path(store: ContentStore, images: list[str], path: str, fmt: str = "oci",
                 platform: Platform | None = None) -> list[ExportItem]:
    """``save_archive`` to a file, written to a temp name and renamed so no half archive is left; ``-`` is stdout."""
    if path == "-":
        out = sys.stdout.buffer
        items = save_archive(store, images, out, fmt, platform)
        out.flush()
        return items
    target = Path(path)
    if target.is_dir():
        raise ExportError(f"{target} is a directory; give a file name to write the archive to")
    tmp = target.with_name(f".{target.name}.pybuild-tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            items = save_archive(store, images, out, fmt, platform)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return items
