"""The state after a build step: layers, config and history — what the cache records.

A ``StepState`` is immutable and serialises to the JSON kept in the store's
cache index, so a cache hit rebuilds exactly the state the step produced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from builder.solver.metadata import ConfigState


@dataclass(frozen=True)
class LayerRef:
    """One layer: its uncompressed diffID and its stored blob."""

    diff_id: str
    digest: str
    size: int
    media_type: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HistoryEntry:
    created_by: str
    empty_layer: bool = False
    comment: str | None = None
    # When the step first ran (RFC 3339); a cached step keeps it, so a rebuild from cache
    # gives an identical image.
    created: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class StepState:
    """A stage's state after one of its steps."""

    key: str
    layers: tuple[LayerRef, ...] = ()
    config: ConfigState = field(default_factory=ConfigState)
    history: tuple[HistoryEntry, ...] = ()
    platform: str = "linux/amd64"
    # The base image's config, for the fields a Dockerfile cannot change (kept as JSON).
    base_config: str | None = None

    def to_json(self) -> dict:
        cfg = asdict(self.config)
        for k, v in list(cfg.items()):
            if isinstance(v, tuple):
                cfg[k] = list(v)
        return {
            "key": self.key, "layers": [lr.to_json() for lr in self.layers], "config": cfg,
            "history": [h.to_json() for h in self.history], "platform": self.platform,
            "base_config": self.base_config,
        }

    @classmethod
    def from_json(cls, data: dict) -> "StepState":
        cfg = dict(data["config"])
        for k in ("env", "entrypoint", "cmd", "shell", "exposed_ports", "volumes", "on_build"):
            if cfg.get(k) is not None:
                cfg[k] = tuple(cfg[k])
        if cfg.get("labels") is not None:
            cfg["labels"] = tuple(tuple(p) for p in cfg["labels"])
        if cfg.get("healthcheck") is not None:
            hc = cfg["healthcheck"]
            cfg["healthcheck"] = (tuple(hc[0]), *hc[1:])
        return cls(
            key=data["key"],
            layers=tuple(LayerRef(**lr) for lr in data["layers"]),
            config=ConfigState(**cfg),
            history=tuple(HistoryEntry(**h) for h in data["history"]),
            platform=data.get("platform", "linux/amd64"),
            base_config=data.get("base_config"),
        )

    @property
    def blobs(self) -> list[str]:
        return [lr.digest for lr in self.layers]
