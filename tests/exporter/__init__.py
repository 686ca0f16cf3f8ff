"""Tests of image import and export (builder.exporter) against skopeo and umoci."""
