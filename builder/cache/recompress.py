"""``--cache-to compression=gzip|zstd``: carry the exported records' layers in that compression.

A build stores its step layers gzip-compressed. To export them as zstd, each layer is
decompressed from the stored blob and compressed again (multi-threaded, as
``builder.image.compress`` does for images): the diffID — the uncompressed tar — stays, the blob
digest changes. The new blob is kept in the store as a *variant* of the layer (same diffID, a
graph edge from the original so GC keeps it as long as the layer), so the next export finds it
and does not compress again. The records are rewritten to name the blobs the exported cache
holds; an importer adopts them as they are, and its image then has those layers (its config and
diff_ids are unchanged, so its id is the same).

Which layers: the build's own (every layer above the base image). The base image's layers keep
the compression their registry served them in — a push can mount them from there instead of
uploading — unless ``force-compression=true``, as buildx's "apply the compression to all
layers, including already existing ones". A layer already in the asked compression is never
recompressed, whatever level it was made with; ``compression-level`` applies to new blobs.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Callable

from builder.cache.format import CacheConfig
from builder.errors import PybuildError
from builder.image import mediatypes as mt
from builder.solver.state import LayerRef, StepState

_CHUNK = 1 << 20


class RecompressError(PybuildError):
    pass


@dataclass(frozen=True)
class Compression:
    """What ``--cache-to`` asked for."""

    kind: str  # mt.GZIP or mt.ZSTD
    level: int | None = None  # None: the codec's default (builder.image.compress.DEFAULT_LEVELS)
    force: bool = False  # base image layers too


@dataclass
class Recompressed:
    converted: int = 0  # blobs compressed by this export
    reused: int = 0  # variants the store already had


def recompress_records(store, config: CacheConfig, want: Compression,
                       say: Callable[[str], None] = lambda m: None) -> Recompressed:
    """Rewrite ``config``'s records so their layers are in ``want`` (see the module docstring)."""
    stats = Recompressed()
    done: dict[str, LayerRef] = {}  # a layer is in most records (every later step's): once each
    base_counts: dict[str | None, int] = {}
    records = []
    for record in config.records.values():
        state = record.state
        if state.base_config not in base_counts:
            base_counts[state.base_config] = _base_layer_count(state)
        first_own = 0 if want.force else base_counts[state.base_config]
        layers = list(state.layers[:first_own])
        for lr in state.layers[first_own:]:
            if lr.digest not in done:
                done[lr.digest] = _in_compression(store, lr, want, stats)
            layers.append(done[lr.digest])
        records.append(replace(record, state=replace(state, layers=tuple(layers))))
    config.replace_records(records)
    if stats.converted or stats.reused:
        say(f"cache layers as {want.kind}: {stats.converted} compressed, {stats.reused} already in the store")
    return stats


def _base_layer_count(state: StepState) -> int:
    """How many of the state's layers are the base image's (its config's diff_ids)."""
    if not state.base_config:
        return 0
    try:
        diff_ids = json.loads(state.base_config)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        return 0
    if not isinstance(diff_ids, list) or [lr.diff_id for lr in state.layers[:len(diff_ids)]] != diff_ids:
        return 0
    return len(diff_ids)


def _in_compression(store, layer: LayerRef, want: Compression, stats: Recompressed) -> LayerRef:
    if layer.media_type in mt.FOREIGN_LAYERS or mt.layer_compression(layer.media_type) == want.kind:
        return layer
    found = _variant(store, layer.diff_id, want.kind)
    if found is not None:
        stats.reused += 1
        return found
    stats.converted += 1
    return _recompress(store, layer, want)


def _variant(store, diff_id: str, kind: str) -> LayerRef | None:
    """A blob holding ``diff_id`` in compression ``kind`` that the store has on disk or, failing
    that, can fetch (a lazy one, e.g. adopted from a zstd cache: free to push where it lives)."""
    found = [(digest, media_type) for digest, media_type in store.index.layer_blobs_for(diff_id)
             if media_type not in mt.FOREIGN_LAYERS and mt.LAYER_COMPRESSION.get(media_type) == kind]
    for digest, media_type in found:
        if store.has_blob(digest):
            return LayerRef(diff_id, digest, store.blob_size(digest), media_type)
    for digest, media_type in found:
        remote = store.index.remote_blob(digest)
        if remote is not None:
            return LayerRef(diff_id, digest, remote.size, media_type)
    return None


def _recompress(store, layer: LayerRef, want: Compression) -> LayerRef:
    """Decompress the stored blob and compress it as ``want`` into a new blob, checking on the
    way that it is the layer its diffID says (a corrupt blob is an error, not a cache entry)."""
    import zstandard
    from isal.isal_zlib import error as IsalError

    from builder.image.compress import compressor, open_layer_stream
    from builder.image.errors import ImageError

    media_type = mt.layer_media_type(want.kind)
    what = f"layer {layer.diff_id[:19]}"
    try:
        with store.open_blob(layer.digest) as blob, store.blob_writer() as writer:
            tar = open_layer_stream(blob, layer.media_type)
            try:
                # closing() also on a failure: the codecs' worker threads must not outlive it
                with closing(compressor(writer, want.kind, want.level)) as packed:
                    hasher = hashlib.sha256()
                    while data := tar.read(_CHUNK):
                        hasher.update(data)
                        packed.write(data)
            finally:
                tar.close()
            if "sha256:" + hasher.hexdigest() != layer.diff_id:
                raise RecompressError(f"{what}: the stored blob {layer.digest[:19]} does not unpack to its diffID")
            digest, size = writer.commit()
    except (OSError, EOFError, ValueError, zstandard.ZstdError, IsalError, ImageError) as exc:
        raise RecompressError(f"{what}: cannot compress it as {want.kind}: {exc}") from None
    store.record_layer_variant(layer.digest, digest, layer.diff_id, media_type)
    return LayerRef(layer.diff_id, digest, size, media_type)
