"""Layers in one import: write a directory as a layer blob, apply a blob onto a directory."""
from __future__ import annotations

from builder.image.layer_apply import ApplyStats, apply_layer, clean_name
from builder.image.layer_writer import (
    OPAQUE_MARKER, WHITEOUT_PREFIX, LayerBlob, LayerWriter, source_date_epoch_from_env, write_layer,
)

__all__ = [
    "ApplyStats", "LayerBlob", "LayerWriter", "OPAQUE_MARKER", "WHITEOUT_PREFIX", "apply_layer",
    "clean_name", "source_date_epoch_from_env", "write_layer",
]
