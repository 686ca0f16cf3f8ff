"""Fetching lazy blobs: content the store knows about but downloads only when it is first read.

A build that reuses cache records from a registry (``--cache-from``) or starts
from a registry base image learns every layer's digest, size and location
without downloading it; the index's ``remote_blobs`` table keeps that
location. When something opens such a blob (a step unpacking its parent, an
export, ``pybuild run``) it is fetched here, verified against its digest and
size by the store on the way in, exactly as a pull would. A push to a
registry that already has the blob never opens it at all.

Sources: ``{"type": "registry", "ref": "host/repo"}`` and
``{"type": "local", "dir": "/path/to/oci-layout"}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from builder.store.errors import BlobNotFoundError, StoreError

if TYPE_CHECKING:
    from builder.store.index import RemoteBlob
    from builder.store.store import ContentStore


def fetch_remote_blob(store: "ContentStore", remote: "RemoteBlob") -> None:
    """Download ``remote`` into ``store`` (verified); raises a clear error when it cannot."""
    kind = remote.source.get("type")
    if kind == "registry":
        _fetch_from_registry(store, remote)
    elif kind == "local":
        _fetch_from_layout(store, remote)
    else:
        raise StoreError(f"blob {remote.digest[:19]}: unknown lazy source {kind!r}")


def _fetch_from_registry(store: "ContentStore", remote: "RemoteBlob") -> None:
    from builder.registry.client import RepositoryClient
    from builder.registry.config import load_registry_options
    from builder.registry.errors import RegistryError
    from builder.registry.reference import parse_reference
    from builder.registry.transport import Transport

    where = str(remote.source.get("ref", ""))
    try:
        ref = parse_reference(where)
    except RegistryError as exc:
        raise StoreError(f"blob {remote.digest[:19]}: bad lazy source {where!r}: {exc}") from None
    transport = Transport(ref.api_host, load_registry_options(store.root))
    try:
        client = RepositoryClient(transport, ref.repository)
        # The store verifies digest and size as it writes: a wrong body never becomes visible.
        with client.open_blob(remote.digest, remote.size, verify_digest=False) as reader:
            store.put_blob(reader, remote.digest, remote.size)
    except RegistryError as exc:
        raise BlobNotFoundError(f"layer {remote.digest[:19]} is not in the store and fetching it from "
                                f"{where} failed: {exc}") from None
    finally:
        transport.close()


def _fetch_from_layout(store: "ContentStore", remote: "RemoteBlob") -> None:
    algo, _, hexpart = remote.digest.partition(":")
    path = Path(str(remote.source.get("dir", ""))) / "blobs" / algo / hexpart
    try:
        with open(path, "rb") as fh:
            store.put_blob(fh, remote.digest, remote.size)
    except FileNotFoundError:
        raise BlobNotFoundError(f"layer {remote.digest[:19]} is not in the store nor in the cache "
                                f"directory {remote.source.get('dir')}") from None
