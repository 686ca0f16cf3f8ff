"""Tests of the content store (builder.store) and the busybox fixture image."""
