"""Streaming layer compression: multi-core gzip (ISA-L) and zstd, and their decompression.

Writers compress on worker threads that run outside the GIL, so hashing and
tar building on the calling thread overlap with compression. Streams never hold
more than a few blocks in memory, and closing a stream never closes the file
object beneath it (the caller owns that).
"""
from __future__ import annotations

import io
import os
from typing import BinaryIO

from builder.image import mediatypes as mt
from builder.image.errors import LayerError, UnsupportedMediaTypeError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

DEFAULT_LEVELS = {mt.GZIP: 1, mt.ZSTD: 3}
BLOCK_SIZE = 1 << 20


def cpu_count() -> int:
    """CPUs this process may run on (honours taskset / cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class UsageLevelError(UnsupportedMediaTypeError):
    """A compression level outside the codec's range."""


def isal_level(gzip_level: int) -> int:
    """ISA-L has levels 0–3; map the familiar gzip 1–9 scale onto them.

    ISA-L level 1 compresses about as well as zlib -4 at several times the
    speed, level 3 about as well as zlib -6.
    """
    if not 0 <= gzip_level <= 9:
        raise UsageLevelError(f"gzip level {gzip_level} out of range 0-9")
    return {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 3, 8: 3, 9: 3}[gzip_level]


class _NonClosing(io.RawIOBase):
    """Forwards writes to ``target`` but leaves it open on close (also the "none" compressor)."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._target.write(data)
        return len(data)

    def flush(self) -> None:
        if hasattr(self._target, "flush"):
            self._target.flush()


def compressor(target: BinaryIO, compression: str, level: int | None = None,
               threads: int | None = None) -> BinaryIO:
    """A writable stream compressing into ``target``; ``close()`` finishes the stream.

    ``level`` is on the codec's usual scale (gzip 0–9, zstd 1–19); ``threads``
    defaults to every available CPU.
    """
    threads = cpu_count() if threads is None else max(1, threads)
    if compression == mt.UNCOMPRESSED:
        return _NonClosing(target)
    if compression == mt.GZIP:
        from isal import igzip_threaded

        lvl = isal_level(DEFAULT_LEVELS[mt.GZIP] if level is None else level)
        return igzip_threaded.open(_NonClosing(target), "wb", compresslevel=lvl,
                                   threads=threads, block_size=BLOCK_SIZE)
    if compression == mt.ZSTD:
        import zstandard

        lvl = DEFAULT_LEVELS[mt.ZSTD] if level is None else level
        if not 1 <= lvl <= 22:
            raise UsageLevelError(f"zstd level {lvl} out of range 1-22")
        # threads=1 would still spawn one worker; 0 compresses on the calling thread.
        cctx = zstandard.ZstdCompressor(level=lvl, threads=threads if threads > 1 else 0,
                                        write_content_size=False)
        return cctx.stream_writer(target, closefd=False, write_size=BLOCK_SIZE)
    raise UnsupportedMediaTypeError(
        f"unknown compression {compression!r}: expected one of {', '.join(mt.COMPRESSIONS)}")


def decompressor(source: BinaryIO, compression: str) -> BinaryIO:
    """A readable stream of ``source`` decompressed; gzip inflates on a helper thread."""
    if compression == mt.UNCOMPRESSED:
        return source
    if compression == mt.GZIP:
        from isal import igzip_threaded

        return igzip_threaded.open(source, "rb", threads=1, block_size=BLOCK_SIZE)
    if compression == mt.ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(
            source, read_size=BLOCK_SIZE, read_across_frames=True, closefd=False)
    raise UnsupportedMediaTypeError(
        f"unknown compression {compression!r}: expected one of {', '.join(mt.COMPRESSIONS)}")


def detect_compression(head: bytes) -> str:
    """Guess the compression of a blob from its first bytes (tar has no magic at offset 0)."""
    if head.startswith(GZIP_MAGIC):
        return mt.GZIP
    if head.startswith(ZSTD_MAGIC):
        return mt.ZSTD
    return mt.UNCOMPRESSED


def open_layer_stream(source: BinaryIO, media_type: str | None) -> BinaryIO:
    """Decompressed tar bytes of a layer blob, by media type (or sniffed when it is None)."""
    if media_type is None:
        head = source.read(4)
        while 0 < len(head) < 4:  # short reads from pipes and sockets
            more = source.read(4 - len(head))
            if not more:
                break
            head += more
        return decompressor(_Prepended(head, source), detect_compression(head))
    return decompressor(source, mt.layer_compression(media_type))


class _Prepended(io.RawIOBase):
    """``head`` followed by the rest of ``source``; closing it leaves ``source`` open."""

    def __init__(self, head: bytes, source: BinaryIO) -> None:
        self._head = head
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._source.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def decompression_error(exc: BaseException) -> LayerError:
    """A corrupt-stream exception from any codec, as a one-line ``LayerError``."""
    return LayerError(f"layer data is corrupt: {exc}")
