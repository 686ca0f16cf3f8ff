"""``--cache-to``: write a build's cache records and their layers to a registry or a directory.

``collect`` turns cache keys into a ``CacheConfig`` (the records as the local
cache index holds them). ``export_registry`` pushes the layers (skipping those
the repository has, mounting from other repositories when possible), the
cache config and a manifest; ``export_local`` writes the same as an OCI image
layout. Both merge with what is already at the destination — records of
other branches and Dockerfiles stay — unless ``merge=false`` is given.
``inline_document`` is the ``type=inline`` form, kept in the image config.

Before writing, this export's records are stamped with the time and, with
``compression=``, rewritten to layers in that compression (``recompress``);
the merge then drops older records no build exported within ``max-age`` and
keeps at most ``max-records`` (``CacheConfig.merge``).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from builder.cache.format import CONFIG_MEDIA_TYPE, STEPS_MEDIA_TYPE, CacheConfig, ExportedRecord
from builder.cache.recompress import Compression, recompress_records
from builder.cache.spec import CacheSpec
from builder.errors import PybuildError
from builder.image import mediatypes as mt
from builder.image.digest import sha256_digest
from builder.solver.state import StepState


class CacheExportError(PybuildError):
    pass


@dataclass
class ExportSummary:
    destination: str
    records: int
    layers: int
    manifest_digest: str
    uploaded: int = 0  # layer blobs sent (the rest existed or were mounted)
    converted: int = 0  # layer blobs compressed for ``compression=`` by this export
    dropped: int = 0  # earlier records the merge left out (max-age, max-records)


def collect(store, keys: list[str]) -> CacheConfig:
    """The cache records of ``keys`` from the store's cache index (missing ones are skipped)."""
    config = CacheConfig()
    for key in dict.fromkeys(keys):
        record = store.index.cache_get(key, touch=False)
        if record is None or "state" not in record.result:
            continue
        state = StepState.from_json(record.result["state"])
        config.add(ExportedRecord(key, state, float(record.result.get("duration_s", 0.0))))
    return config


def inline_document(config: CacheConfig, image_layers: list[str]) -> dict | None:
    """The records whose layers are all in the image, as the inline cache value (no layer list:
    the image's own layers serve)."""
    present = set(image_layers)
    inline = CacheConfig()
    for record in config.records.values():
        if all(lr.digest in present for lr in record.state.layers):
            inline.add(record)
    if not inline.records:
        return None
    return json.loads(inline.to_json(with_layers=False))


def _documents(config: CacheConfig) -> tuple[bytes, bytes | None]:
    """(the cache config, the steps blob it names or None): the steps travel apart, so a build
    cached to the end never downloads them (see format.py)."""
    steps = config.steps_json() if config.steps else None
    ref = (sha256_digest(steps), len(steps)) if steps is not None else None
    return config.to_json(steps_blob=ref), steps


def _manifest(config_bytes: bytes, config: CacheConfig, steps: bytes | None = None) -> bytes:
    layers = [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
              for layer in (config.layers[d] for d in sorted(config.layers))]
    if steps is not None:  # listed, so the registry keeps it with the rest
        layers.append({"mediaType": STEPS_MEDIA_TYPE, "digest": sha256_digest(steps), "size": len(steps)})
    body = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": CONFIG_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256_digest(config_bytes), "size": len(config_bytes)},
        "layers": layers,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _now() -> float:
    return time.time()


def _prepare(store, config: CacheConfig, spec: CacheSpec, older: CacheConfig | None, where: str,
             say: Callable[[str], None]) -> tuple[int, int]:
    """Stamp this export's records, put their layers in the asked compression, then merge the
    ``older`` document (already at the destination) into it; (layers converted, records dropped)."""
    now = _now()
    config.stamp(now)
    converted = 0
    if spec.compression is not None:
        want = Compression(spec.compression, spec.compression_level, spec.force_compression)
        converted = recompress_records(store, config, want, say).converted
    if older is None:
        return converted, 0
    pruned = config.merge(older, now=now, max_age=spec.max_age, max_records=spec.max_records)
    message = f"merged {pruned.kept} earlier record(s) from {where}"
    if pruned.expired or pruned.over_limit:
        message += (f"; dropped {pruned.expired} not exported within max-age and "
                    f"{pruned.over_limit} over max-records={spec.max_records}")
    say(message)
    return converted, pruned.expired + pruned.over_limit


# ------------------------------------------------------------------ registry


class _Blobs:
    """Blob source for the push: the cache config from memory, layers from the store (lazy ones
    are fetched only if the destination needs an upload)."""

    def __init__(self, store, extra: dict[str, bytes]) -> None:
        self.store = store
        self.extra = extra

    def open_blob(self, digest: str) -> BinaryIO:
        if digest in self.extra:
            return io.BytesIO(self.extra[digest])
        return self.store.open_blob(digest)


def export_registry(store, config: CacheConfig, spec: CacheSpec,
                    say: Callable[[str], None] = lambda m: None) -> ExportSummary:
    from builder.registry.api import SOURCES_PATH
    from builder.registry.client import Manifest, RepositoryClient
    from builder.registry.errors import NotFoundError, RegistryError
    from builder.registry.push import push_image
    from builder.registry.reference import parse_reference
    from builder.registry.sources import BlobSources
    from builder.registry.transport import Transport

    from builder.cache.format import InvalidCacheError

    from builder.registry.config import load_registry_options

    ref = parse_reference(spec.attrs["ref"])
    options = load_registry_options(store.root)  # <root>/registries.json, as pybuild push
    older = None
    if spec.merge:
        transport = Transport(ref.api_host, options)
        try:
            client = RepositoryClient(transport, ref.repository)
            existing = client.get_manifest(ref.identifier)
            doc = json.loads(existing.content)
            cfg = doc.get("config") or {}
            if cfg.get("mediaType") == CONFIG_MEDIA_TYPE:
                older = CacheConfig.from_json(client.fetch_blob_bytes(cfg["digest"], cfg.get("size"), limit=64 << 20),
                                              what=str(ref))
                if older.steps_ref is not None:  # merged too, so misses stay explainable
                    older.load_steps(client.fetch_blob_bytes(*older.steps_ref, limit=older.steps_ref[1]))
        except NotFoundError:
            pass
        except (RegistryError, InvalidCacheError, ValueError, KeyError) as exc:
            say(f"not merging with the cache at {ref}: {exc}")
        finally:
            transport.close()
    converted, dropped = _prepare(store, config, spec, older, str(ref), say)
    config_bytes, steps = _documents(config)
    manifest_bytes = _manifest(config_bytes, config, steps)
    extra = {sha256_digest(config_bytes): config_bytes}
    if steps is not None:
        extra[sha256_digest(steps)] = steps
    blobs = _Blobs(store, extra)
    sources = BlobSources(Path(store.root) / SOURCES_PATH)
    try:
        result = push_image(ref, blobs, Manifest(manifest_bytes, mt.OCI_MANIFEST, sha256_digest(manifest_bytes)),
                            options=options, sources=sources, progress=say)
    finally:
        sources.close()
    return ExportSummary(str(ref), len(config.records), len(config.layers), result.digest,
                         uploaded=len([d for d in result.uploaded if d in config.layers]),
                         converted=converted, dropped=dropped)


# ------------------------------------------------------------------ local OCI layout


def export_local(store, config: CacheConfig, spec: CacheSpec,
                 say: Callable[[str], None] = lambda m: None) -> ExportSummary:
    """Write the cache as an OCI image layout in ``dest`` (blobs added, index.json replaced atomically)."""
    from builder.cache.importer import CacheImportError, read_layout_cache
    from builder.cache.format import InvalidCacheError

    directory = Path(spec.attrs["dest"])
    tag = spec.attrs.get("tag", "latest")
    try:
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        found = None
        if spec.merge:
            try:
                found = read_layout_cache(directory, tag)
            except (CacheImportError, InvalidCacheError, OSError, ValueError) as exc:
                say(f"not merging with the cache in {directory}: {exc}")
        converted, dropped = _prepare(store, config, spec, found[0] if found else None, str(directory), say)
        uploaded = 0
        for digest in sorted(config.layers):
            target = directory / "blobs" / "sha256" / digest[7:]
            if target.exists() and target.stat().st_size == config.layers[digest].size:
                continue
            with store.open_blob(digest) as src:
                _write_atomic(target, src)
            uploaded += 1
        config_bytes, steps = _documents(config)
        manifest_bytes = _manifest(config_bytes, config, steps)
        for data in (config_bytes, manifest_bytes) + ((steps,) if steps is not None else ()):
            _write_atomic(directory / "blobs" / "sha256" / sha256_digest(data)[7:], io.BytesIO(data))
        layout = directory / "oci-layout"
        if not layout.exists():
            _write_atomic(layout, io.BytesIO(b'{"imageLayoutVersion":"1.0.0"}'))
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        index_path = directory / "index.json"
        if index_path.exists():
            try:
                old = json.loads(index_path.read_bytes())
                index["manifests"] = [m for m in old.get("manifests", []) if isinstance(m, dict) and
                                      (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != tag]
            except (ValueError, AttributeError):
                pass
        index["manifests"].append({"mediaType": mt.OCI_MANIFEST, "digest": sha256_digest(manifest_bytes),
                                   "size": len(manifest_bytes), "artifactType": CONFIG_MEDIA_TYPE,
                                   "annotations": {"org.opencontainers.image.ref.name": tag}})
        _write_atomic(index_path, io.BytesIO(json.dumps(index, indent=2).encode() + b"\n"))
    except OSError as exc:
        raise CacheExportError(f"--cache-to type=local: cannot write {directory}: {exc.strerror or exc}") from None
    return ExportSummary(str(directory), len(config.records), len(config.layers), sha256_digest(manifest_bytes),
                         uploaded=uploaded, converted=converted, dropped=dropped)


def _write_atomic(path: Path, src: BinaryIO) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:16]}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
