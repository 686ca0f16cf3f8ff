"""The exported build cache: cache keys → step results and the layers they need.

An exported cache is an OCI image manifest whose config has its own media type
(``application/vnd.pybuild.cache.config.v1+json``) and whose layers are every
layer blob a record refers to, so a registry keeps those blobs alive and a
push can mount them. The config lists records::

    {"schemaVersion": 1,
     "layers": [{"digest": "sha256:…", "size": 123, "mediaType": "…tar+gzip", "diffID": "sha256:…"}],
     "records": [{"key": "sha256:…", "state": {…StepState JSON…}, "duration_s": 1.5,
                  "exported": "2026-01-01T00:00:00Z"}],
     "stepsBlob": {"digest": "sha256:…", "size": 123, "mediaType": "…cache.steps.v1+json"}}

``stepsBlob`` names a second blob (also a manifest layer, so the registry keeps it) holding
``{"schemaVersion": 1, "steps": [{"id": "step:…", "inputs": {…}, "exported": "…"}]}``: the
inputs each step saw, which a fresh machine needs only to explain a miss. A COPY's changed-file
map has an entry per file, so for a big context these are most of the bytes; a build that is
cached to the end never downloads them. Documents written before ``stepsBlob`` carry
``steps`` inline, and still import.

A record's state names the blobs its layers are in *in the exported cache*
(``compression=zstd`` rewrites them to the zstd blobs; the diffIDs stay).
``exported`` is when a build last exported the record, so merges can drop
what no build has exported for a while (``merge``); documents written before
it existed have none and still import.

Inline cache uses the same document (without the layer list, the image's own
layers serve) under the image config key ``pybuild.cache.v1``.

Everything read from a cache source is untrusted: ``CacheConfig.from_json``
validates the schema, every digest and size, and that each record's layers
are listed with the same digest, size and type; a record that fails is dropped
(a cache miss), never used. Layer content is verified by digest when fetched
and by diffID when unpacked, so a poisoned record cannot put a wrong layer in
an image. Pure data and validation, no I/O.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from builder.image import mediatypes as mt
from builder.image.digest import parse_digest
from builder.image.errors import InvalidDigestError
from builder.solver.state import StepState

CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
STEPS_MEDIA_TYPE = "application/vnd.pybuild.cache.steps.v1+json"
MAX_STEPS_BLOB = 1 << 30
INLINE_KEY = "pybuild.cache.v1"
SCHEMA_VERSION = 1
# Bounds for untrusted documents: far above any real build, far below a memory problem.
MAX_RECORDS = 50_000
MAX_LAYERS = 50_000
MAX_LAYER_SIZE = 1 << 42
LAYER_TYPES = frozenset(mt.LAYER_COMPRESSION)


class InvalidCacheError(ValueError):
    """A cache document that cannot be used at all (not JSON, wrong schema)."""


@dataclass(frozen=True)
class CacheLayer:
    digest: str
    size: int
    media_type: str
    diff_id: str

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "mediaType": self.media_type, "diffID": self.diff_id}


@dataclass(frozen=True)
class ExportedRecord:
    """One cache record: the step's key and the state it produced."""

    key: str
    state: StepState
    duration_s: float = 0.0
    exported: float | None = None  # Unix time of the last export that carried it; None: not known

    def result(self) -> dict[str, Any]:
        """The record as the solver keeps it in the store's cache index."""
        return {"state": self.state.to_json(), "duration_s": self.duration_s}


@dataclass(frozen=True)
class Pruned:
    """What a merge did with the older document's records."""

    kept: int = 0
    expired: int = 0  # not exported within max-age
    over_limit: int = 0  # beyond max-records


@dataclass
class CacheConfig:
    records: dict[str, ExportedRecord] = field(default_factory=dict)
    layers: dict[str, CacheLayer] = field(default_factory=dict)
    # Portable step identity -> the inputs the exporting build saw (KeyInputs JSON), so a fresh
    # machine can explain a miss ("1 file changed: src/main.py") rather than call every step new.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_exported: dict[str, float] = field(default_factory=dict)  # step identity -> when exported
    dropped: list[str] = field(default_factory=list)  # why records were refused (for warnings)
    # (digest, size) of the blob holding the steps, until ``load_steps`` reads it
    steps_ref: tuple[str, int] | None = None

    def add(self, record: ExportedRecord) -> None:
        self.records[record.key] = record
        for lr in record.state.layers:
            self.layers.setdefault(lr.digest, CacheLayer(lr.digest, lr.size, lr.media_type, lr.diff_id))

    def replace_records(self, records: list[ExportedRecord]) -> None:
        """Hold exactly ``records`` (the layer list follows them)."""
        self.records.clear()
        self.layers.clear()
        for record in records:
            self.add(record)

    def stamp(self, now: float) -> None:
        """Mark every record and step as exported at ``now`` (this export's own)."""
        self.replace_records([replace(r, exported=now) for r in self.records.values()])
        self.step_exported = {ident: now for ident in self.steps}

    def merge(self, older: "CacheConfig", *, now: float, max_age: float | None = None,
              max_records: int = MAX_RECORDS) -> Pruned:
        """Keep ``older``'s records that this one does not replace (exports merge, not overwrite),
        but not those exported more than ``max_age`` seconds before ``now``, and no more than
        ``max_records`` in all: this document's own first, then the most recently exported.

        A record without a time (a document older than the field) counts as exported now: it
        ages from the first merge that sees it rather than vanishing at once. A time in the
        future (a skewed clock, or a hostile document) counts as now, so it cannot live forever.
        Steps (the inputs that explain misses) are bounded the same way.
        """
        times = {key: record.exported for key, record in older.records.items()}
        fresh, expired = _fresh(times, self.records, now, max_age)
        fresh.sort(key=lambda kw: (-kw[1], kw[0]))
        room = max(0, max_records - len(self.records))
        for key, when in fresh[:room]:
            self.add(replace(older.records[key], exported=when))
        steps, _ = _fresh({ident: older.step_exported.get(ident) for ident in older.steps}, self.steps,
                          now, max_age)
        steps.sort(key=lambda kw: (-kw[1], kw[0]))
        for ident, when in steps[:max(0, max_records - len(self.steps))]:
            self.steps[ident] = older.steps[ident]
            self.step_exported[ident] = when
        return Pruned(kept=min(room, len(fresh)), expired=expired, over_limit=max(0, len(fresh) - room))

    def to_json(self, *, with_layers: bool = True, steps_blob: tuple[str, int] | None = None) -> bytes:
        """The document; with ``steps_blob`` (the digest and size of ``steps_json()``) the steps
        are referred to rather than included."""
        body: dict[str, Any] = {"schemaVersion": SCHEMA_VERSION}
        if with_layers:
            body["layers"] = [self.layers[d].to_json() for d in sorted(self.layers)]
        body["records"] = [_record_json(r) for r in sorted(self.records.values(), key=lambda r: r.key)]
        if steps_blob is not None:
            body["stepsBlob"] = {"digest": steps_blob[0], "size": steps_blob[1], "mediaType": STEPS_MEDIA_TYPE}
        elif self.steps:
            body["steps"] = self._steps_list()
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def steps_json(self) -> bytes:
        """The blob ``stepsBlob`` names."""
        body = {"schemaVersion": SCHEMA_VERSION, "steps": self._steps_list()}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def _steps_list(self) -> list[dict[str, Any]]:
        return [_step_json(ident, self.steps[ident], self.step_exported.get(ident)) for ident in sorted(self.steps)]

    def load_steps(self, data: bytes) -> bool:
        """Take in the steps blob ``steps_ref`` names (untrusted: digest, size and shape are
        checked; a bad blob leaves the steps empty). True if it was used."""
        import hashlib

        if self.steps_ref is None:
            return False
        digest, size = self.steps_ref
        self.steps_ref = None
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return False
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(body, dict) or body.get("schemaVersion") != SCHEMA_VERSION:
            return False
        self._take_steps(body.get("steps"))
        return True

    def _take_steps(self, raw_steps: Any) -> None:
        if isinstance(raw_steps, list) and len(raw_steps) <= MAX_RECORDS:
            for raw in raw_steps:
                inputs = _parse_step(raw)
                if inputs is not None:
                    self.steps[raw["id"]] = inputs
                    when = parse_time(raw.get("exported"))
                    if when is not None:
                        self.step_exported[raw["id"]] = when

    @classmethod
    def from_json(cls, data: bytes | str | dict, *, layers: list[CacheLayer] | None = None,
                  what: str = "cache") -> "CacheConfig":
        """Parse and validate an untrusted cache document. ``layers`` replaces the document's
        layer list (inline cache: the image's own layers)."""
        if isinstance(data, (bytes, str)):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidCacheError(f"{what}: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("schemaVersion") != SCHEMA_VERSION:
            raise InvalidCacheError(f"{what}: not a pybuild cache document (schemaVersion "
                                    f"{data.get('schemaVersion') if isinstance(data, dict) else None!r})")
        config = cls()
        if layers is None:
            raw_layers = data.get("layers")
            if not isinstance(raw_layers, list) or len(raw_layers) > MAX_LAYERS:
                raise InvalidCacheError(f"{what}: 'layers' must be a list of at most {MAX_LAYERS}")
            layers = []
            for i, raw in enumerate(raw_layers):
                layer = _parse_layer(raw)
                if layer is None:
                    config.dropped.append(f"layer {i} is malformed")
                    continue
                layers.append(layer)
        known = {layer.digest: layer for layer in layers}
        raw_records = data.get("records")
        if not isinstance(raw_records, list) or len(raw_records) > MAX_RECORDS:
            raise InvalidCacheError(f"{what}: 'records' must be a list of at most {MAX_RECORDS}")
        for i, raw in enumerate(raw_records):
            record, why = _parse_record(raw, known)
            if record is None:
                config.dropped.append(f"record {i}: {why}")
                continue
            config.add(record)
        config._take_steps(data.get("steps", []))
        ref = data.get("stepsBlob")
        if isinstance(ref, dict):
            try:
                digest = parse_digest(ref.get("digest"))
            except (ValueError, InvalidDigestError, TypeError):
                digest = None
            size = ref.get("size")
            if digest and isinstance(size, int) and not isinstance(size, bool) and 0 < size <= MAX_STEPS_BLOB:
                config.steps_ref = (digest, size)
            else:
                config.dropped.append("the steps blob reference is malformed")
        return config


def _fresh(times: dict[str, float | None], newer: dict[str, Any], now: float,
           max_age: float | None) -> tuple[list[tuple[str, float]], int]:
    """(key, export time) of the older entries (``times``: key -> when exported, None if not
    known) that ``newer`` does not replace and that are within ``max_age``; and how many were
    too old."""
    fresh, expired = [], 0
    for key, when in times.items():
        if key in newer:
            continue
        when = now if when is None else min(when, now)
        if max_age is not None and now - when > max_age:
            expired += 1
            continue
        fresh.append((key, when))
    return fresh, expired


def format_time(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """An RFC 3339 UTC time as Unix time; None for anything else (untrusted: never an error)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _record_json(record: ExportedRecord) -> dict[str, Any]:
    body = {"key": record.key, "state": record.state.to_json(), "duration_s": round(record.duration_s, 3)}
    if record.exported is not None:
        body["exported"] = format_time(record.exported)
    return body


def _step_json(ident: str, inputs: dict[str, Any], exported: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": ident, "inputs": inputs}
    if exported is not None:
        body["exported"] = format_time(exported)
    return body


def _parse_step(raw: Any) -> dict[str, Any] | None:
    """A step's recorded inputs, if their shape is right. Checked in depth (every changed-file
    entry, tens of thousands for a big COPY) only when used: ``valid_step_inputs``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].startswith("step:"):
        return None
    inputs = raw.get("inputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("op"), str) \
            or not isinstance(inputs.get("instruction"), str):
        return None
    for k in ("parent", "sources"):
        if not isinstance(inputs.get(k), (str, type(None))):
            return None
    if not all(isinstance(inputs.get(k, {}), dict) for k in ("args", "env", "extra", "files")):
        return None
    return inputs


def valid_step_inputs(inputs: dict[str, Any]) -> bool:
    """Whether imported step inputs are exactly what ``KeyInputs.from_json`` expects."""
    from builder.solver.cachekey import KeyInputs

    for k in ("args", "env", "extra", "files"):
        v = inputs.get(k, {})
        if not isinstance(v, dict) or not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
            return False
    try:
        KeyInputs.from_json(inputs)
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _parse_layer(raw: Any) -> CacheLayer | None:
    if not isinstance(raw, dict):
        return None
    try:
        digest = parse_digest(raw.get("digest"))
        diff_id = parse_digest(raw.get("diffID"))
    except (ValueError, InvalidDigestError):
        return None
    size, media_type = raw.get("size"), raw.get("mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_LAYER_SIZE:
        return None
    if media_type not in LAYER_TYPES:
        return None
    return CacheLayer(digest, size, media_type, diff_id)


_STR_TUPLES = ("env", "exposed_ports", "volumes", "on_build")
_OPT_STR_TUPLES = ("entrypoint", "cmd", "shell")


def _parse_record(raw: Any, known: dict[str, CacheLayer]) -> tuple[ExportedRecord | None, str]:
    if not isinstance(raw, dict):
        return None, "not an object"
    try:
        key = parse_digest(raw.get("key"))
    except (ValueError, InvalidDigestError):
        return None, "bad key"
    state_raw = raw.get("state")
    if not isinstance(state_raw, dict) or not _state_shape_ok(state_raw):
        return None, "malformed state"
    try:
        state = StepState.from_json(state_raw)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"malformed state ({exc})"
    if state.key != key:
        return None, "state key does not match the record key"
    for lr in state.layers:
        listed = known.get(lr.digest)
        if listed is None or (listed.size, listed.media_type, listed.diff_id) != (lr.size, lr.media_type, lr.diff_id):
            return None, f"layer {lr.digest[:19]} is not listed with the same size, type and diffID"
    duration = raw.get("duration_s", 0.0)
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration < 0:
        duration = 0.0
    return ExportedRecord(key, state, float(duration), parse_time(raw.get("exported"))), ""


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _state_shape_ok(raw: dict) -> bool:
    """Types of every field a ``StepState`` JSON may hold (from_json trusts them)."""
    if not isinstance(raw.get("key"), str) or not isinstance(raw.get("platform", ""), str):
        return False
    if not isinstance(raw.get("base_config"), (str, type(None))):
        return False
    layers, history, cfg = raw.get("layers"), raw.get("history"), raw.get("config")
    if not isinstance(layers, list) or not isinstance(history, list) or not isinstance(cfg, dict):
        return False
    for lr in layers:
        if not isinstance(lr, dict) or set(lr) != {"diff_id", "digest", "size", "media_type"}:
            return False
        try:
            parse_digest(lr["digest"])
            parse_digest(lr["diff_id"])
        except (ValueError, InvalidDigestError):
            return False
        if not isinstance(lr["size"], int) or lr["media_type"] not in LAYER_TYPES:
            return False
    for h in history:
        if not isinstance(h, dict) or not isinstance(h.get("created_by"), str):
            return False
        if not set(h) <= {"created_by", "empty_layer", "comment", "created"}:
            return False
        if not isinstance(h.get("empty_layer", False), bool) or not isinstance(h.get("comment"), (str, type(None))):
            return False
        if not isinstance(h.get("created"), (str, type(None))):
            return False
    from dataclasses import fields

    from builder.solver.metadata import ConfigState

    allowed = {f.name for f in fields(ConfigState)}
    if not set(cfg) <= allowed:
        return False
    for k in _STR_TUPLES:
        if k in cfg and not _is_str_list(cfg[k]):
            return False
    for k in _OPT_STR_TUPLES:
        if cfg.get(k) is not None and not _is_str_list(cfg[k]):
            return False
    for k in ("user", "working_dir"):
        if k in cfg and not isinstance(cfg[k], str):
            return False
    for k in ("stop_signal", "author"):
        if cfg.get(k) is not None and not isinstance(cfg[k], str):
            return False
    if "cmd_set" in cfg and not isinstance(cfg["cmd_set"], bool):
        return False
    labels = cfg.get("labels", [])
    if not isinstance(labels, list) or not all(_is_str_list(p) and len(p) == 2 for p in labels):
        return False
    hc = cfg.get("healthcheck")
    if hc is not None:
        if not isinstance(hc, list) or len(hc) != 6 or not _is_str_list(hc[0]):
            return False
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in hc[1:]):
            return False
    return True
