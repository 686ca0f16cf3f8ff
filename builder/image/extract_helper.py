"""A helper process that creates small regular files while ``layer_apply`` parses the layer.

Extracting a tree of small files costs about as much Python work per entry (parsing
the header, resolving the name) as kernel work per file (create, write, set the
mtime, close), and one interpreter does them one after the other. A second process
doing the file creation lets the two overlap on another core; a thread would not,
as it needs the GIL back after every system call.

The helper decides nothing. The parent hands it only absolute paths it resolved and
checked, in directories this apply created itself (so nothing can be in the way),
with the content and what to set; it keeps every other decision (names, containment,
limits, whiteouts) and calls ``sync`` before anything that could depend on, or
disturb, a file still queued. When the queue is full the parent creates the file
itself, so neither side waits for the other.

Protocol, parent to helper (the helper's stdin): a ``_RECORD`` (flags, mode, uid,
gid, mtime, path length, content length), the path, the content. A record with
``SYNC`` set asks for a status. Helper to parent (its stdout): ``READY`` once running,
then for each sync and at the end of input a ``_STATUS`` (errno, message length) and
the message (the failing path). After a failure the helper creates nothing more.

The helper side uses the standard library only: it runs as ``python -I -S <this file>``.
"""
from __future__ import annotations

import os
import signal
import struct
import sys

SYNC = 1
CHOWN = 2
CHMOD = 4
READY = b"R"
_RECORD = struct.Struct("<BHIIqII")   # flags, mode, uid, gid, mtime, path length, content length
_STATUS = struct.Struct("<iI")        # errno (0: fine; -1: not an OSError), message length
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_BATCH = 64 << 10          # queued bytes written to the pipe at once
_QUEUE_LIMIT = 256 << 10   # beyond this (and a full pipe) the parent creates files itself
_PIPE_SIZE = 1 << 20
_IOV_MAX = 1024
_PROBE_EVERY = 32          # offers between checks whether a starting helper is ready


class HelperError(OSError):
    """The helper stopped without reporting (killed, or failed to start)."""


class FileCreator:
    """The parent's end: queue files for the helper, wait for it, stop it."""

    def __init__(self, proc) -> None:
        self._proc = proc
        self._to = proc.stdin.fileno()
        self._from = proc.stdout.fileno()
        self._ready = False
        self._dead = False   # it never started: the parent does everything
        self._probes = 0
        self._queue: list[bytes | memoryview] = []
        self._queued = 0
        self._encoding = sys.getfilesystemencoding()
        self.busy = False   # files were queued since the last sync

    @classmethod
    def start(cls, wait: bool = False) -> FileCreator | None:
        """A started helper (ready when ``wait``), or None where none can run."""
        import subprocess

        script = os.path.abspath(__file__)
        if not sys.executable or not os.path.isfile(script):
            return None
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", script], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            return None  # no interpreter to run, no processes left: extract on our own
        creator = cls(proc)
        try:
            import fcntl

            fcntl.fcntl(creator._to, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except (ImportError, AttributeError, OSError):
            pass  # a smaller pipe only means the parent takes more files itself
        os.set_blocking(creator._to, False)
        if wait:
            creator._ready = creator._read_exact(1) == READY
            if not creator._ready:
                creator.stop()
                return None
        else:
            os.set_blocking(creator._from, False)
        return creator

    def offer(self, path: str, data: bytes, mode: int, flags: int, uid: int, gid: int, mtime: int) -> bool:
        """Queue one file; False when the caller should create it (helper not ready, queue full)."""
        if not self._ready:
            if self._dead:
                return False
            self._probes += 1
            if self._probes % _PROBE_EVERY or not self._probe():
                return False
        queued = self._queued
        if queued > _QUEUE_LIMIT:
            self._probes += 1
            if self._probes % _PROBE_EVERY:
                return False  # the pipe was full a moment ago: no system call to find it still is
            self._flush(block=False)
            queued = self._queued
            if queued > _QUEUE_LIMIT:
                return False
        name = path.encode(self._encoding, "surrogateescape")
        try:
            meta = _RECORD.pack(flags, mode, uid, gid, mtime, len(name), len(data)) + name
        except struct.error:  # a number beyond the record's fields: the caller's code handles it
            return False
        self._queue += (meta, data)
        self._queued = queued = queued + len(meta) + len(data)
        self.busy = True
        if queued >= _BATCH:
            self._flush(block=False)
        return True

    def sync(self) -> None:
        """Wait until every queued file exists; raise the helper's first failure, if any."""
        if not self.busy:
            return
        self._queue.append(_RECORD.pack(SYNC, 0, 0, 0, 0, 0, 0))
        self._queued += _RECORD.size
        self._flush(block=True)
        self.busy = False
        self._check(self._read_status())

    def close(self) -> None:
        """Wait for the queued files, then stop the helper; raise its failure, if any."""
        try:
            self.sync()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the helper at once (files it has not created yet are not created)."""
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()

    # -- the pipes

    def _probe(self) -> bool:
        try:
            byte = os.read(self._from, 1)
        except BlockingIOError:
            return False
        if byte != READY:
            self._dead = True  # nothing was queued yet: the parent goes on alone
            return False
        os.set_blocking(self._from, True)
        self._ready = True
        return True

    def _flush(self, block: bool) -> None:
        queue = self._queue
        while queue:
            try:
                done = os.writev(self._to, queue[:_IOV_MAX])
            except BlockingIOError:
                if not block:
                    return
                self._wait_writable()
                continue
            except BrokenPipeError:
                raise HelperError("the file-creating helper process exited unexpectedly") from None
            if done == self._queued:  # the common case: all of it
                queue.clear()
                self._queued = 0
                return
            self._queued -= done
            i = 0
            while i < len(queue) and done >= len(queue[i]):
                done -= len(queue[i])
                i += 1
            del queue[:i]
            if done:
                queue[0] = memoryview(queue[0])[done:]

    def _wait_writable(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._to, select.POLLOUT)
        poller.poll()

    def _read_exact(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            part = os.read(self._from, left)
            if not part:
                raise HelperError("the file-creating helper process exited unexpectedly")
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def _read_status(self) -> tuple[int, bytes]:
        err, length = _STATUS.unpack(self._read_exact(_STATUS.size))
        return err, self._read_exact(length) if length else b""

    @staticmethod
    def _check(status: tuple[int, bytes]) -> None:
        err, message = status
        if err > 0:
            raise OSError(err, os.strerror(err), os.fsdecode(message))
        if err < 0:
            raise ValueError(message.decode("utf-8", "replace"))


# -- the helper's end


def serve(inp: int, out: int) -> None:
    """Create the files described on ``inp`` until it ends; statuses go to ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    os.write(out, READY)
    helper = _Helper(out)
    rest = b""
    head_size = _RECORD.size
    while True:
        chunk = os.read(inp, _PIPE_SIZE)
        if not chunk:
            break
        pos = 0
        if rest:  # finish the record the last read cut, with just enough of this chunk
            if len(rest) < head_size:
                pos = min(head_size - len(rest), len(chunk))
                rest += chunk[:pos]
                if len(rest) < head_size:
                    continue
            _, _, _, _, _, name_len, size = _RECORD.unpack_from(rest)
            missing = head_size + name_len + size - len(rest)
            if missing > len(chunk) - pos:
                rest += chunk[pos:]
                continue
            helper.run(rest + chunk[pos:pos + missing], 0)
            pos += missing
        pos = helper.run(chunk, pos)
        rest = chunk[pos:]
    helper.reply()


class _Helper:
    def __init__(self, out: int) -> None:
        self.out = out
        self.failure: tuple[int, bytes] | None = None

    def run(self, buf: bytes, pos: int) -> int:
        """Act on the whole records of ``buf`` from ``pos``; where the first cut one starts."""
        head_size, unpack, end = _RECORD.size, _RECORD.unpack_from, len(buf)
        with memoryview(buf) as view:
            while pos + head_size <= end:
                flags, mode, uid, gid, mtime, name_len, size = unpack(buf, pos)
                start = pos + head_size
                stop = start + name_len + size
                if stop > end:
                    break
                pos = stop
                if flags & SYNC:
                    self.reply()
                elif self.failure is None:  # after one, nothing more until the parent has heard
                    self.failure = _create(buf[start:start + name_len], view[start + name_len:stop],
                                           flags, mode, uid, gid, mtime)
        return pos

    def reply(self) -> None:
        err, message = self.failure or (0, b"")
        self.failure = None
        os.write(self.out, _STATUS.pack(err, len(message)) + message)


def _create(path: bytes, data: memoryview, flags: int, mode: int, uid: int, gid: int,
            mtime: int) -> tuple[int, bytes] | None:
    """One file, as ``layer_apply``'s short path does it; the failure, if any."""
    try:
        fd = os.open(path, _CREATE, mode & 0o777)
        try:
            while data:
                data = data[os.write(fd, data):]
            if flags & CHOWN:
                os.fchown(fd, uid, gid)
            if flags & CHMOD:  # after chown, which clears set-ID bits
                os.fchmod(fd, mode)
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.errno or -1, path
    except Exception as exc:  # e.g. an mtime the filesystem cannot hold
        return -1, str(exc).encode("utf-8", "replace")
    return None


if __name__ == "__main__":
    try:
        serve(sys.stdin.fileno(), sys.stdout.fileno())
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away: nothing left to report to
