"""Compression streams: multi-core gzip and zstd that other tools read, and back again."""
from __future__ import annotations

import gzip
import io
import os
import subprocess

import pytest
import zstandard

from builder.image import mediatypes as mt
from builder.image.compress import compressor, decompressor, detect_compression, open_layer_stream
from builder.image.errors import UnsupportedMediaTypeError

from .image_helpers import require_tool

DATA = os.urandom(3 << 20) + b"compressible " * 300_000  # several blocks of each kind


@pytest.mark.parametrize("compression", [mt.GZIP, mt.ZSTD, mt.UNCOMPRESSED])
@pytest.mark.parametrize("threads", [1, 2])
def test_round_trip(compression, threads):
    out = io.BytesIO()
    stream = compressor(out, compression, threads=threads)
    for i in range(0, len(DATA), 100_000):
        stream.write(DATA[i:i + 100_000])
    stream.close()
    assert not out.closed, "closing the compressor must leave the caller's file open"
    blob = out.getvalue()
    assert detect_compression(blob[:4]) == compression
    assert decompressor(io.BytesIO(blob), compression).read() == DATA


def test_gzip_is_one_standard_stream_that_gzip_and_pigz_accept(tmp_path):
    out = io.BytesIO()
    with compressor(out, mt.GZIP, level=6, threads=2) as stream:
        stream.write(DATA)
    assert gzip.decompress(out.getvalue()) == DATA
    blob = tmp_path / "blob.gz"
    blob.write_bytes(out.getvalue())
    subprocess.run([require_tool("gzip"), "-t", str(blob)], check=True)
    assert subprocess.run([require_tool("pigz"), "-dc", str(blob)], check=True, capture_output=True).stdout == DATA


def test_multithreaded_zstd_is_readable_by_the_zstd_tool(tmp_path):
    out = io.BytesIO()
    with compressor(out, mt.ZSTD, level=3, threads=2) as stream:
        stream.write(DATA)
    blob = tmp_path / "blob.zst"
    blob.write_bytes(out.getvalue())
    assert subprocess.run([require_tool("zstd"), "-dc", str(blob)], check=True, capture_output=True).stdout == DATA
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue())).read() == DATA


def test_concatenated_frames_and_members_decompress_fully():
    # Layers from other tools may be several gzip members or zstd frames back to back.
    two_gz = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decompressor(io.BytesIO(two_gz), mt.GZIP).read() == b"first second"
    z = zstandard.ZstdCompressor()
    two_zst = z.compress(b"first ") + z.compress(b"second")
    assert decompressor(io.BytesIO(two_zst), mt.ZSTD).read() == b"first second"


def test_open_layer_stream_by_media_type_or_sniffing():
    gz = gzip.compress(b"tar bytes")
    assert open_layer_stream(io.BytesIO(gz), mt.DOCKER_LAYER_GZIP).read() == b"tar bytes"
    assert open_layer_stream(io.BytesIO(gz), None).read() == b"tar bytes"
    assert open_layer_stream(io.BytesIO(b"plain"), None).read() == b"plain"
    source = io.BytesIO(gzip.compress(b"x" * 100_000))
    stream = open_layer_stream(source, None)
    assert stream.read() == b"x" * 100_000
    stream.close()
    assert not source.closed, "the caller's stream stays open"


def test_bad_compression_names_and_levels_are_clear_errors():
    with pytest.raises(UnsupportedMediaTypeError, match="unknown compression 'lz4'"):
        compressor(io.BytesIO(), "lz4")
    with pytest.raises(UnsupportedMediaTypeError, match="out of range"):
        compressor(io.BytesIO(), mt.GZIP, level=12)
    with pytest.raises(UnsupportedMediaTypeError, match="out of range"):
        compressor(io.BytesIO(), mt.ZSTD, level=0)
