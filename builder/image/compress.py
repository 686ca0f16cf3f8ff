"""Streaming layer compression: multi-core gzip (ISA-L) and zstd, and their decompression.

Writers compress on worker threads that run outside the GIL, so hashing and
tar building on the calling thread overlap with compression. Streams never hold
more than a few blocks in memory, and closing a stream never closes the file
object beneath it (the caller owns that).
"""
from __future__ import annotations

import io
import os
import queue
import threading
from typing import Any, BinaryIO, Callable, Iterator

from builder.image import mediatypes as mt
from builder.image.errors import LayerError, UnsupportedMediaTypeError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
# Not layer compressions (no OCI media type), but ADD extracts such archives: sniffed only.
BZIP2 = "bzip2"
XZ = "xz"

DEFAULT_LEVELS = {mt.GZIP: 1, mt.ZSTD: 3}
BLOCK_SIZE = 1 << 20
_INPUT_SIZE = 1 << 16  # compressed bytes per codec call: keeps each call short


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
    """A readable stream of ``source`` decompressed on a helper thread, a few MiB ahead.

    The codecs release the GIL while they inflate, so a consumer parsing the
    output on the calling thread runs in parallel with them. Output is produced
    in bounded pieces: a decompression bomb never grows memory. ``close()``
    stops the helper; ``source`` stays open.
    """
    if compression == mt.UNCOMPRESSED:
        return source
    if compression not in _INFLATERS:
        raise UnsupportedMediaTypeError(
            f"unknown compression {compression!r}: expected one of {', '.join(mt.COMPRESSIONS)}")
    return ReadAhead(_INFLATERS[compression](source))


def read_ahead(source: BinaryIO) -> BinaryIO:
    """``source`` read on a helper thread (file reads, and whatever a wrapper does per read)."""
    return ReadAhead(_chunks(source))


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while data := source.read(BLOCK_SIZE):
        yield data


def _gzip_chunks(source: BinaryIO) -> Iterator[bytes]:
    """Inflate gzip members back to back (pigz and others may write several), with ISA-L.

    Trailing zero bytes are ignored, other trailing bytes are an error (as gzip(1) does).
    """
    from isal import igzip

    # The unbuffered reader igzip_threaded uses: each read is one bounded inflate, no copy.
    reader = igzip._IGzipReader(source) if hasattr(igzip, "_IGzipReader") else igzip.IGzipFile(fileobj=source)
    while data := reader.read(BLOCK_SIZE):
        yield data


def _bzip2_chunks(source: BinaryIO) -> Iterator[bytes]:
    import bz2

    yield from _members(source, bz2.BZ2Decompressor, b"BZh", "bzip2")


def _xz_chunks(source: BinaryIO) -> Iterator[bytes]:
    import lzma

    yield from _members(source, lzma.LZMADecompressor, XZ_MAGIC, "xz")


def _members(source: BinaryIO, new: Callable[[], Any], magic: bytes, what: str) -> Iterator[bytes]:
    """Decompress concatenated bzip2 or xz streams into pieces of about ``BLOCK_SIZE``.

    Each codec call's output is bounded, so memory stays bounded whatever the
    compression ratio. Trailing zero bytes (tape-style padding) are ignored;
    other trailing bytes and a stream cut short are errors.
    """
    dec = new()
    pending = b""
    batch: list[bytes] = []  # pieces are handed over in blocks: each one costs a thread switch
    batched = 0
    while True:
        if not pending:
            pending = source.read(_INPUT_SIZE)
            if not pending:
                if dec is not None:
                    raise EOFError(f"{what} stream ends before the end-of-stream marker")
                if batch:
                    yield b"".join(batch)
                return
        if dec is None:  # between streams
            if not pending.strip(b"\0"):
                pending = b""
                continue
            if not pending.startswith(magic[:len(pending)]):
                raise ValueError(f"trailing data after the {what} stream")
            dec = new()
        while True:
            out = dec.decompress(pending, BLOCK_SIZE)
            if out:
                batch.append(out)
                batched += len(out)
                if batched >= BLOCK_SIZE:
                    yield b"".join(batch) if len(batch) > 1 else batch[0]
                    batch, batched = [], 0
            pending = b""  # the codec keeps what it has not used yet
            if dec.eof or dec.needs_input:
                break
        if dec.eof:
            pending = dec.unused_data  # the next stream, padding or junk
            dec = None


def _zstd_chunks(source: BinaryIO) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=BLOCK_SIZE, read_across_frames=True, closefd=False)
    while data := reader.read(BLOCK_SIZE):
        yield data


_INFLATERS: dict[str, Callable[[BinaryIO], Iterator[bytes]]] = {
    mt.GZIP: _gzip_chunks, mt.ZSTD: _zstd_chunks, BZIP2: _bzip2_chunks, XZ: _xz_chunks,
}


def _read_ahead(chunks: Iterator[bytes], out: queue.Queue, stop: threading.Event) -> None:
    """The helper thread of ``ReadAhead``: every piece, then b"" (or the failure), unless stopped."""
    def put(item: bytes | BaseException) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for data in chunks:
            if not put(data):
                return
        last: bytes | BaseException = b""
    except BaseException as exc:  # re-raised on the reading thread
        last = exc
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    put(last)


class ReadAhead(io.RawIOBase):
    """Bytes from ``chunks`` (a generator run on a helper thread), at most ``depth`` pieces ahead.

    A failure on the helper is raised by the next ``read``. ``close()`` stops and
    joins the helper, so nothing touches the underlying stream after it.
    """

    def __init__(self, chunks: Iterator[bytes], depth: int = 4) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._pending = b""
        self._offset = 0
        self._done = False
        # The helper holds no reference to self: an abandoned reader is collected, and closed.
        self._thread = threading.Thread(target=_read_ahead, args=(chunks, self._queue, self._stop),
                                        name="layer-read-ahead", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(BLOCK_SIZE), b""))
        if self._offset >= len(self._pending):
            if self._done or n == 0:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            self._pending, self._offset = item, 0
        if self._offset == 0 and n >= len(self._pending):
            out, self._pending = self._pending, b""
            return out
        out = self._pending[self._offset:self._offset + n]
        self._offset += len(out)
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            while self._thread.is_alive():
                try:  # unblock a helper waiting for room in the queue
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        super().close()


def detect_compression(head: bytes) -> str:
    """Guess the compression of a blob from its first bytes (tar has no magic at offset 0)."""
    if head.startswith(GZIP_MAGIC):
        return mt.GZIP
    if head.startswith(ZSTD_MAGIC):
        return mt.ZSTD
    if head.startswith(BZIP2_MAGIC):
        return BZIP2
    if head.startswith(XZ_MAGIC):
        return XZ
    return mt.UNCOMPRESSED


_SNIFF = len(XZ_MAGIC)  # the longest magic


def open_layer_stream(source: BinaryIO, media_type: str | None) -> BinaryIO:
    """Decompressed tar bytes of a layer blob, by media type (or sniffed when it is None)."""
    if media_type is None:
        head = source.read(_SNIFF)
        while 0 < len(head) < _SNIFF:  # short reads from pipes and sockets
            more = source.read(_SNIFF - len(head))
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

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._source.read(n)
        head, self._head = self._head, b""
        if n is None or n < 0:
            return head + self._source.read()
        if n <= len(head):
            self._head = head[n:]
            return head[:n]
        return head + self._source.read(n - len(head))

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def decompression_error(exc: BaseException) -> LayerError:
    """A corrupt-stream exception from any codec, as a one-line ``LayerError``."""
    return LayerError(f"layer data is corrupt: {exc}")
