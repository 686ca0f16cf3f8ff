"""``--cache-from``: cache records from registries, OCI layout directories and inline images.

``CacheImport.start`` reads (in the background) each source's cache document (a cache manifest's
config, or an image config's inline ``pybuild.cache.v1``), validates it, and
keeps the records in memory. The solver asks ``adopt(store, key)`` when a key
is not in the local cache: the record is copied into the store's cache index
and its layers become *lazy* blobs — the store knows their digest, size and
location and downloads them only if a later step or an export reads them. A
build that is cached to the end and only pushes to a registry that already
has the layers downloads nothing but the cache document.

Before a record is used, each of its layers must exist at the source with the
recorded size: a layer the registry's cache manifest lists is vouched for by the
registry (it keeps every blob its manifests refer to), any other takes one HEAD,
remembered. A record that fails any check is a miss, never an error.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from builder.cache.format import CONFIG_MEDIA_TYPE, INLINE_KEY, CacheConfig, CacheLayer, ExportedRecord, \
    InvalidCacheError
from builder.cache.spec import CacheSpec
from builder.errors import PybuildError
from builder.image import mediatypes as mt

MAX_DOCUMENT = 64 << 20


class CacheImportError(PybuildError):
    pass


@dataclass
class _Source:
    """One loaded cache source: its records and how to check and fetch its layers."""

    spec: CacheSpec
    config: CacheConfig
    location: dict[str, Any]  # the store's lazy-blob source JSON
    has_layer: Callable[[CacheLayer], bool]
    close: Callable[[], None] = lambda: None
    checked: dict[str, bool] = field(default_factory=dict)
    steps_blob: Callable[[], bytes] | None = None  # the steps document, fetched on first need


class CacheImport:
    """Every ``--cache-from`` source of one build, consulted in the order given."""

    def __init__(self) -> None:
        self.sources: list[_Source] = []
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._steps_lock = threading.Lock()  # a download under it must not hold up layer checks
        self._ready = threading.Event()

    @classmethod
    def start(cls, specs: list[CacheSpec], platform: str, warn: Callable[[str], None], store=None,
              done: Callable[["CacheImport"], None] = lambda imp: None) -> "CacheImport":
        """Load in the background (the network round trips overlap the build's own start: parsing,
        hashing the context, resolving the base); every query waits for it."""
        imp = cls()

        def work() -> None:
            try:
                imp._load_all(specs, platform, warn, store)
                done(imp)
            finally:
                imp._ready.set()

        threading.Thread(target=work, name="cache-import", daemon=True).start()
        return imp

    def wait(self) -> None:
        self._ready.wait()

    def _load_all(self, specs: list[CacheSpec], platform: str, warn: Callable[[str], None], store) -> None:
        for spec in specs:
            try:
                source = _load_registry(spec, platform, store) if spec.type == "registry" else _load_local(spec)
            except (PybuildError, InvalidCacheError, OSError) as exc:
                msg = f"importing {spec.describe()}: {exc} (continuing without it)"
                self.warnings.append(msg)
                warn(msg)
                continue
            if source.config.dropped:
                msg = (f"{spec.describe()}: ignored {len(source.config.dropped)} invalid record(s) or layer(s), "
                       f"e.g. {source.config.dropped[0]}")
                self.warnings.append(msg)
                warn(msg)
            self.sources.append(source)
            if store is not None and source.location["type"] == "registry":
                _remember_mount_source(store, source)

    def close(self) -> None:
        self.wait()
        for source in self.sources:
            source.close()

    def previous_inputs(self, ident: str) -> dict | None:
        """What the exporting build recorded for the step ``ident`` (to explain a miss here)."""
        self.wait()
        from builder.cache.format import valid_step_inputs

        for source in self.sources:
            self._load_steps(source)
            found = source.config.steps.get(ident)
            if found is not None and valid_step_inputs(found):
                return found
        return None

    def _load_steps(self, source: _Source) -> None:
        """The steps (to explain a miss) come only when a miss needs them: a build cached to the
        end never downloads them."""
        with self._steps_lock:
            if source.config.steps_ref is None or source.steps_blob is None:
                return
            try:
                data = source.steps_blob()
            except (PybuildError, OSError):
                source.config.steps_ref = None  # unexplained misses, not a failed build
                return
            source.config.load_steps(data)

    def adopt(self, store, key: str) -> dict | None:
        """The record for ``key`` from the first source that has a usable one, now also in the
        store's cache index (its layers lazy); None on a miss."""
        self.wait()
        for source in self.sources:
            record = source.config.records.get(key)
            if record is None or not self._layers_present(source, record):
                continue
            layers = [(lr.digest, lr.size, lr.media_type) for lr in record.state.layers]
            store.add_remote_blobs(layers, source.location)
            for lr in record.state.layers:
                store.index.record_layer(lr.digest, lr.diff_id, lr.media_type)
            result = record.result()
            result["imported_from"] = source.spec.describe()
            store.cache_put(key, result, [lr.digest for lr in record.state.layers])
            return result
        return None

    def _layers_present(self, source: _Source, record: ExportedRecord) -> bool:
        for lr in record.state.layers:
            with self._lock:
                known = source.checked.get(lr.digest)
            if known is None:
                layer = source.config.layers.get(lr.digest)
                try:
                    known = layer is not None and source.has_layer(layer)
                except PybuildError:
                    known = False
                with self._lock:
                    source.checked[lr.digest] = known
            if not known:
                return False
        return True


# ------------------------------------------------------------------ registry


def _load_registry(spec: CacheSpec, platform: str, store=None) -> _Source:
    from builder.image.oci import Platform
    from builder.registry.client import RepositoryClient
    from builder.registry.errors import NotFoundError
    from builder.registry.pull import parse_image_manifest, resolve
    from builder.registry.reference import parse_reference
    from builder.registry.transport import Transport

    from builder.registry.config import load_registry_options

    ref = parse_reference(spec.attrs["ref"])
    transport = Transport(ref.api_host, load_registry_options(store.root if store is not None else None))
    try:
        client = RepositoryClient(transport, ref.repository)
        try:
            manifest, _index, _platform = resolve(client, ref, Platform.parse(platform), any_platform=True)
        except NotFoundError:
            raise CacheImportError(f"{ref} does not exist yet") from None
        config_desc, layer_descs = parse_image_manifest(manifest, str(ref))
        doc = json.loads(manifest.content)
        config_type = (doc.get("config") or {}).get("mediaType")
        data = client.fetch_blob_bytes(config_desc.digest, config_desc.size, limit=MAX_DOCUMENT)
        if config_type == CONFIG_MEDIA_TYPE:
            config = CacheConfig.from_json(data, what=str(ref))
        else:
            config = _inline_config(data, [(d.digest, d.size, d.media_type) for d in layer_descs], str(ref))
    except BaseException:
        transport.close()
        raise
    location = {"type": "registry", "ref": f"{ref.registry}/{ref.repository}"}

    listed = {(d.digest, d.size) for d in layer_descs}

    def has_layer(layer: CacheLayer) -> bool:
        if (layer.digest, layer.size) in listed:
            return True  # no request: the registry keeps what the manifest it served refers to
        return client.blob_size(layer.digest) in (layer.size, 0)  # 0: registry gave no length

    def steps_blob() -> bytes:
        return client.fetch_blob_bytes(config.steps_ref[0], config.steps_ref[1], limit=config.steps_ref[1])

    return _Source(spec, config, location, has_layer, close=transport.close, steps_blob=steps_blob)


def _remember_mount_source(store, source: _Source) -> None:
    """Tell later pushes to the same registry that these layers can be mounted from the cache repo."""
    from builder.registry.api import SOURCES_PATH
    from builder.registry.sources import BlobSources

    registry, _, repository = source.location["ref"].partition("/")
    sources = BlobSources(Path(store.root) / SOURCES_PATH)
    try:
        sources.record(registry, repository, sorted(source.config.layers))
    finally:
        sources.close()


def _inline_config(config_bytes: bytes, layers: list[tuple[str, int, str]], where: str) -> CacheConfig:
    """The records an image carries in its config (``--cache-to type=inline``)."""
    try:
        image_config = json.loads(config_bytes)
    except ValueError:
        raise CacheImportError(f"{where}: image config is not JSON") from None
    inline = image_config.get(INLINE_KEY) if isinstance(image_config, dict) else None
    if inline is None:
        raise CacheImportError(f"{where} is an image without inline cache (build it with --cache-to type=inline)")
    diff_ids = ((image_config.get("rootfs") or {}).get("diff_ids")) or []
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise CacheImportError(f"{where}: image config and manifest disagree on the number of layers")
    cache_layers = []
    for (digest, size, media_type), diff_id in zip(layers, diff_ids):
        if media_type in mt.LAYER_COMPRESSION and isinstance(diff_id, str):
            cache_layers.append(CacheLayer(digest, size, media_type, diff_id))
    return CacheConfig.from_json(inline, layers=cache_layers, what=f"{where} inline cache")


# ------------------------------------------------------------------ local OCI layout


def read_layout_cache(directory: Path, tag: str = "latest", *,
                      load_steps: bool = True) -> tuple[CacheConfig, str] | None:
    """The cache document of an OCI layout written by ``--cache-to type=local`` (and its
    manifest digest), or None when the directory holds none yet; with ``load_steps=False`` a
    steps blob is left for ``CacheConfig.load_steps``."""
    index_path = directory / "index.json"
    if not index_path.exists():
        return None
    try:
        index = json.loads(index_path.read_bytes())
    except ValueError:
        raise CacheImportError(f"{index_path} is not JSON") from None
    entries = index.get("manifests") if isinstance(index, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        name = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if name != tag:
            continue
        manifest = json.loads(_read_verified(directory, entry.get("digest"), MAX_DOCUMENT))
        config_desc = manifest.get("config") or {}
        if config_desc.get("mediaType") != CONFIG_MEDIA_TYPE:
            raise CacheImportError(f"{directory}: {tag} is not a pybuild cache")
        data = _read_verified(directory, config_desc.get("digest"), MAX_DOCUMENT)
        config = CacheConfig.from_json(data, what=str(directory))
        if config.steps_ref is not None and load_steps:
            try:
                config.load_steps(_read_verified(directory, config.steps_ref[0], config.steps_ref[1]))
            except (CacheImportError, OSError):
                config.steps_ref = None  # no steps: misses are still misses, only less explained
        return config, entry["digest"]
    return None


def _read_verified(directory: Path, digest: object, limit: int) -> bytes:
    from builder.image.digest import parse_digest

    from builder.image.digest import sha256_digest
    from builder.image.errors import InvalidDigestError

    try:
        digest = parse_digest(digest)
    except (ValueError, InvalidDigestError) as exc:
        raise CacheImportError(f"{directory}: {exc}") from None
    path = directory / "blobs" / "sha256" / digest[7:]
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise CacheImportError(f"{path}: larger than {limit} bytes")
    if sha256_digest(data) != digest:
        raise CacheImportError(f"{path}: content does not match its digest")
    return data


def _load_local(spec: CacheSpec) -> _Source:
    directory = Path(spec.attrs["src"]).resolve()
    found = read_layout_cache(directory, spec.attrs.get("tag", "latest"), load_steps=False)
    if found is None:
        raise CacheImportError(f"{directory} holds no cache yet")
    config, _digest = found

    def steps_blob() -> bytes:
        return _read_verified(directory, config.steps_ref[0], config.steps_ref[1])

    def has_layer(layer: CacheLayer) -> bool:
        # A local file is cheap to check in full: a tampered layer is a miss here, not a failed fetch later.
        path = directory / "blobs" / "sha256" / layer.digest[7:]
        try:
            if path.stat().st_size != layer.size:
                return False
            with open(path, "rb") as fh:
                digest = "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            return False
        return digest == layer.digest

    return _Source(spec, config, {"type": "local", "dir": str(directory)}, has_layer, steps_blob=steps_blob)
