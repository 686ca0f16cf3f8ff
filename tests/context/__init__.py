"""Tests of builder.context: ignore files, source selection, digests, the metadata cache, tar contexts."""
