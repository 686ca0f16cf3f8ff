"""Tests for builder.image."""
