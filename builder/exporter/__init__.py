"""Writing finished images somewhere else, and reading them back: OCI layout and docker-archive tars.

Modules:
    ``transfer``        – ``load_archive`` (format auto-detected) and ``save_archive``/``save_to_path``.
    ``oci_layout``      – OCI image layout tars.
    ``docker_archive``  – ``docker save`` tars.
    ``archive``         – hostile-input-safe tar reading, reproducible tar writing.
"""
from __future__ import annotations

from builder.exporter.errors import ArchiveError
from builder.exporter.model import ExportItem, LoadedImage
from builder.exporter.transfer import FORMATS, load_archive, save_archive, save_to_path

__all__ = ["ArchiveError", "ExportItem", "FORMATS", "LoadedImage", "load_archive", "save_archive", "save_to_path"]
