"""The tar reader against the standard library's, whatever sizes the stream is read in."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import tarfile

import pytest

from builder.image import mediatypes as mt
from builder.image.compress import ReadAhead, decompressor, open_layer_stream
from builder.image.errors import LayerError
from builder.image.tarreader import INLINE_LIMIT, TarReader

from .image_helpers import entry, make_tar


class Chunky:
    """A stream that returns reads of random sizes (as a decompressor or a pipe would)."""

    def __init__(self, data: bytes, seed: int, largest: int) -> None:
        self._data = data
        self._pos = 0
        self._rng = random.Random(seed)
        self._largest = largest

    def read(self, n: int = -1) -> bytes:
        take = min(n if n >= 0 else len(self._data), self._rng.randint(1, self._largest))
        out = self._data[self._pos:self._pos + take]
        self._pos += len(out)
        return out


def mixed_archive(fmt: int = tarfile.PAX_FORMAT) -> bytes:
    rng = random.Random(7)
    members = []
    for i in range(300):
        size = rng.choice([0, 1, 511, 512, 513, 4000, 70_000])
        members.append((entry(f"dir{i % 5}/file{i}", mode=0o640), rng.randbytes(size)))
        if i % 50 == 0:
            members.append((entry(f"dir{i % 5}/sub{i}", tarfile.DIRTYPE, mode=0o755), None))
            members.append((entry(f"dir{i % 5}/link{i}", tarfile.SYMTYPE, linkname="../x"), None))
            members.append((entry("p" * 150 + f"/{i}"), b"long name"))  # PAX path / GNU long name
    members.append((entry("big"), os.urandom(INLINE_LIMIT + 100_000)))  # streamed, not inline
    members.append((entry("after-big"), b"still in step"))
    return make_tar(members, fmt=fmt)


def expected(tar: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for info in t:
            data = t.extractfile(info).read() if info.isreg() else None
            out.append((info.name, info.type, info.mode, info.size if info.isreg() else 0, info.linkname, data))
    return out


def read_all(stream) -> list[tuple]:
    reader = TarReader(stream)
    out = []
    for m in reader:
        data = m.data
        if data is None and m.type == "0":
            parts: list[bytes] = []
            reader.copy_content(lambda view: parts.append(bytes(view)))
            data = b"".join(parts)
        out.append((m.name, m.type.encode(), m.mode, m.size, m.linkname, data))
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("largest", [100, 1537, 100_000, 3 << 20])
def test_members_match_the_standard_library_for_any_read_sizes(fmt, largest):
    tar = mixed_archive(fmt)
    want = expected(tar)
    want = [(n, b"0" if t == tarfile.AREGTYPE else t, m, s, ln, d) for n, t, m, s, ln, d in want]
    got = [(n.rstrip("/"), *rest) for n, *rest in read_all(Chunky(tar, seed=largest, largest=largest))]
    assert [g[:5] for g in got] == [w[:5] for w in want]
    assert all(g[5] == w[5] for g, w in zip(got, want))


def test_streamed_content_left_unread_is_skipped():
    tar = mixed_archive()
    names = [m.name for m in TarReader(Chunky(tar, seed=1, largest=5000))]  # never reads "big"
    assert names[-2:] == ["big", "after-big"]


def test_odd_numeric_fields_take_the_careful_parser():
    info = entry("f", uid=5, gid=6)
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT)[:512])
    block[108:116] = b"     5 \0"          # leading spaces, as some old tars write
    block[116:124] = b"\x80" + bytes(6) + b"\x06"  # GNU base-256
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    (m,) = TarReader(io.BytesIO(bytes(block) + bytes(1024)))
    assert (m.uid, m.gid, m.size) == (5, 6, 0)
    block[124:136] = b"0000000_001\0"     # Python's int() would take the underscore; tar does not
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    with pytest.raises(LayerError, match="malformed size field"):
        list(TarReader(io.BytesIO(bytes(block) + bytes(1024))))


def test_checksum_of_non_ascii_headers_is_exact():
    tar = make_tar([(entry("naïve-ünïcode-ñame"), b"x")], fmt=tarfile.GNU_FORMAT)
    assert [m.name for m in TarReader(io.BytesIO(tar))] == ["naïve-ünïcode-ñame"]
    broken = bytearray(tar)
    broken[5] ^= 0x01
    with pytest.raises(LayerError, match="checksum mismatch"):
        list(TarReader(io.BytesIO(bytes(broken))))


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress,
                                      lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:])],
                         ids=["gzip", "bzip2", "xz", "two-gzip-members"])
def test_sniffed_archives_decompress_in_bounded_pieces(compress):
    data = os.urandom(1 << 20) + bytes(12 << 20) + b"end"  # 12 MiB of zeros: a small bomb
    stream = open_layer_stream(io.BytesIO(compress(data)), None)
    assert isinstance(stream, ReadAhead)
    pieces = iter(lambda: stream.read(4 << 20), b"")
    got = []
    for piece in pieces:
        assert len(piece) <= 2 << 20  # never a whole inflated stream at once
        got.append(piece)
    stream.close()
    assert b"".join(got) == data


def test_closing_a_half_read_decompressor_stops_its_thread():
    blob = gzip.compress(bytes(64 << 20))
    stream = decompressor(io.BytesIO(blob), mt.GZIP)
    assert stream.read(10) == bytes(10)
    stream.close()
    assert not stream._thread.is_alive()


def test_decompressor_errors_reach_the_reader():
    stream = decompressor(io.BytesIO(gzip.compress(b"x" * 100_000)[:-30]), mt.GZIP)
    with pytest.raises(EOFError, match="end-of-stream marker"):
        stream.read()


@pytest.mark.parametrize("compress", [lambda d: d, gzip.compress, bz2.compress, lzma.compress,
                                      lambda d: __import__("zstandard").ZstdCompressor().compress(d)],
                         ids=["tar", "gzip", "bzip2", "xz", "zstd"])
def test_sniffed_archives_of_every_kind_apply(tmp_path, compress):
    # ADD extracts local archives of these kinds; bzip2 and xz once failed as "truncated".
    from builder.image.layer import apply_layer

    tar = make_tar([(entry("dir", tarfile.DIRTYPE, mode=0o755), None), (entry("dir/file"), b"content")])
    stats = apply_layer(io.BytesIO(compress(tar)), tmp_path, None)
    assert stats.entries == 2 and (tmp_path / "dir/file").read_bytes() == b"content"
