"""Walk and hash a fresh build context in a second process while the build starts up.

A CI runner's checkout is new to the metadata cache, so every file the
Dockerfile copies has to be read and hashed before the first COPY has a cache
key: for 20,000 files that is most of a fully cached build. ``start_warmup``
forks a helper first thing; it walks the whole context on speculation (most
Dockerfiles copy ``.``) while the build parses the Dockerfile, then hears
which COPY/ADD sources without variables to select (the same keys as the
build's own prefetch), hashes on the other core (threads would only take turns
on the GIL) and sends back, through a pipe, each selection's digest and file
map. Then it saves the digests it made in the metadata cache, as a concurrent
build of the same tree would, says so, and waits: a build that walks for itself
(a COPY that runs, or one it did not prepare) asks it for every digest it made;
one that is cached to the end never pays for them. It exits when the build
closes its end of the request pipe.

The build uses a selection only for exactly the COPY sources it was made
for (and re-walks, checking the digest, only if that COPY runs); a walk of its
own takes a helper's digest only where every stat field still matches.
Whatever goes wrong in the helper (a parse error, a missing source, a signal)
just means the build walks and hashes for itself.
"""
from __future__ import annotations

import marshal
import os
import signal
import threading
import time
from operator import attrgetter
from pathlib import Path

# Off with PYBUILD_CONTEXT_WARMUP=0 (e.g. to measure a build without it).
_ENV = "PYBUILD_CONTEXT_WARMUP"
# How long a COPY waits for the helper's selection before making its own (a helper stuck in a
# directory the build would not even read must not hold the build up).
_ANSWER_WAIT_S = 60.0
# How long a finished build waits for the helper to save its digests before stopping it.
_SAVE_GRACE_S = 5.0

SourceKey = tuple[tuple[str, ...], tuple[str, ...], bool]  # (sources, excludes, parents) of a COPY


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def copy_source_keys(stages) -> list[SourceKey]:
    """``(sources, excludes, parents)`` of every COPY/ADD from the context whose words have no
    variables (their selection does not depend on build args or the stage's ENV), in order,
    without repeats."""
    from builder.frontend.instructions import CopyInstruction

    keys = []
    for stage in stages:
        for instr in stage.instructions:
            if not isinstance(instr, CopyInstruction) or getattr(instr, "from_", None) or not instr.sources:
                continue
            words = [*instr.sources, *instr.excludes]
            if any("$" in w or is_url(w) for w in words):
                continue
            keys.append((tuple(instr.sources), tuple(instr.excludes), bool(instr.parents)))
    return list(dict.fromkeys(keys))


def stages_up_to(dockerfile, target: str | None) -> list:
    """The stages a build of ``target`` may need (those before it in the file, and it)."""
    stages = list(dockerfile.stages)
    if target:
        for i, stage in enumerate(stages):
            if stage.name == target.lower():
                return stages[: i + 1]
    return stages


class ContextWarmup:
    """The build's handle on the helper process."""

    def __init__(self, pid: int, read_fd: int, request_fd: int = -1) -> None:
        self.pid = pid
        self._root = ""
        self._selections: dict[SourceKey, tuple] = {}
        self._digests_raw = b""
        self._digests: dict[str, tuple] | None = None
        self._request_fd = request_fd  # b"D" asks for every digest; closing it lets the helper go
        self._request_lock = threading.Lock()
        self._received = threading.Event()  # the selections are in (or never will be)
        self._saved = threading.Event()  # it has saved its digests (or never will)
        self._digests_in = threading.Event()  # every digest it made, once asked (or never)
        self._exited = threading.Event()  # the helper has exited
        self._reap_lock = threading.Lock()
        # Read as the helper writes, so it never blocks on a full pipe.
        threading.Thread(target=self._receive, args=(read_fd,), name="context-warmup", daemon=True).start()

    def _receive(self, fd: int) -> None:
        try:
            with os.fdopen(fd, "rb") as pipe:
                message = _read_frame(pipe)
                if isinstance(message, tuple) and len(message) == 2 and isinstance(message[1], dict):
                    self._root, self._selections = message
                self._received.set()
                _read_frame(pipe)  # saved
                self._saved.set()
                # Kept as bytes: only a walk of the build's own unpacks it (the GIL is the
                # build's while a cached build finishes).
                self._digests_raw = _read_frame(pipe, raw=True)
        except (OSError, ValueError, EOFError, TypeError):
            pass  # nothing (more) usable: the build walks and hashes for itself
        finally:
            self._received.set()
            self._saved.set()
            self._digests_in.set()
        self._reap(block=True)

    def _request(self, what: bytes | None) -> None:
        """Send the helper ``what``, or (None) close the request pipe: it may exit once saved."""
        with self._request_lock:
            if self._request_fd < 0:
                return
            try:
                if what is not None:
                    os.write(self._request_fd, what)
                    return
            except OSError:
                pass  # it is gone: the reader sees the end
            os.close(self._request_fd)
            self._request_fd = -1

    def selection(self, key: SourceKey, root: Path, reselect):
        """The helper's ``Selection`` for one COPY's sources in ``root`` (waiting for it), or None.

        It comes with its digest and file map, which is all a cached COPY needs; its entries
        are made only if the COPY runs, by ``reselect()`` (the build's own walk, which then
        takes the helper's digests), and must give the same digest.
        """
        from builder.context.errors import ContextError
        from builder.context.source import Selection, SourceMatch

        if not self._received.wait(_ANSWER_WAIT_S):
            return None  # stuck (say, on a hung mount it walked on speculation): select here
        made = self._selections.get(key)
        if made is None or self._root != str(root):
            return None
        try:
            count, sources, fingerprints, matches, digest = made
            files = dict(zip(_split(sources, count), _split(fingerprints, count)))
            matches = tuple(SourceMatch(*m) for m in matches)
        except (TypeError, ValueError):
            return None

        def entries():
            walked = reselect()
            if walked.digest != digest:
                raise ContextError("the build context changed while this build was reading it; build again")
            return walked.entries

        return Selection.deferred(root, matches, digest, files, entries)

    def digests(self, timeout: float | None = None) -> dict[str, tuple]:
        """Every digest the helper knows, ``relpath -> (size, mtime, ctime, inode, device,
        digest)``, for a walk of the build's own to take where all stat fields still match."""
        if not self._digests_in.is_set():
            self._request(b"D")
        self._digests_in.wait(timeout)
        if self._digests is None and self._digests_in.is_set():
            try:
                digests = marshal.loads(self._digests_raw) if self._digests_raw else {}
            except (ValueError, EOFError, TypeError):
                digests = {}
            self._digests = digests if isinstance(digests, dict) else {}
            self._digests_raw = b""
        return self._digests or {}

    def wait_saved(self, timeout: float | None = None) -> bool:
        """Wait until the helper has saved its digests in the metadata cache (or is gone)."""
        return self._saved.wait(timeout)

    def close(self) -> None:
        """End the helper: let it finish saving (briefly), stop it if it is still walking."""
        self._request(None)
        if not (self._received.is_set() and self._exited.wait(_SAVE_GRACE_S)):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap(block=True)

    def _reap(self, block: bool) -> None:
        with self._reap_lock:
            if self._exited.is_set():
                return
            try:
                pid, _ = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid = self.pid
            if pid:
                self._exited.set()


def start_warmup(context_dir: Path | str, dockerfile: Path | str, target: str | None,
                 cache_dir: Path | str) -> ContextWarmup | None:
    """Fork the helper for ``context_dir``, then parse the Dockerfile and tell it which sources
    to select; None where it cannot safely help (or the Dockerfile copies nothing from the
    context, or does not parse: the build then says why).

    The helper starts walking the whole context at once, while this process imports the
    parser: most Dockerfiles copy ``.``, and for the others it stops that walk as soon as it
    hears so. Only from a single-threaded process (forking one with threads could leave the
    child holding a lock some other thread had) and only on a machine with a second core.
    """
    if os.environ.get(_ENV, "1") == "0" or (os.cpu_count() or 1) < 2:
        return None
    if threading.active_count() != 1 or not hasattr(os, "fork"):
        return None
    if not os.path.isdir(context_dir) or not os.path.isfile(dockerfile):
        return None
    from builder.context.forked import fork_worker

    keys_read, keys_write = os.pipe()

    def helper(write_fd: int) -> None:
        os.close(keys_write)
        _helper(write_fd, keys_read, str(context_dir), str(dockerfile), cache_dir)

    started = fork_worker(helper, pipe_bytes=4 << 20)
    os.close(keys_read)
    if started is None:
        os.close(keys_write)
        return None
    warmup = ContextWarmup(*started, request_fd=keys_write)
    from builder.frontend import parse

    try:
        with open(dockerfile, "rb") as fh:
            keys = copy_source_keys(stages_up_to(parse(fh.read(), str(dockerfile)), target))
    except Exception:
        keys = []
    if not keys:
        warmup.close()
        return None
    # The same pipe then carries the request for digests (or its end, which lets the helper go).
    warmup._request(_frame(keys))
    return warmup


def _frame(value) -> bytes:
    data = marshal.dumps(value)
    return len(data).to_bytes(8, "little") + data


def _write_frame(pipe, value) -> None:
    pipe.write(_frame(value))


def _read_frame(pipe, raw: bool = False):
    head = pipe.read(8)
    if len(head) != 8:
        raise EOFError
    size = int.from_bytes(head, "little")
    data = pipe.read(size)
    if len(data) != size:
        raise EOFError
    return data if raw else marshal.loads(data)


_SOURCE, _FINGERPRINT = attrgetter("source"), attrgetter("fingerprint")  # of an Entry, in C


def _split(joined: str, count: int) -> list[str]:
    """The inverse of NUL-joining ``count`` strings (no path or fingerprint holds a NUL)."""
    values = joined.split("\0") if count else []
    if len(values) != count:
        raise ValueError("column length")
    return values


FULL_TREE: SourceKey = ((".",), (), False)  # COPY . <dest>: what the helper walks before it is told


class _NotNeeded(Exception):
    """The Dockerfile does not copy the whole context: the walk begun on speculation stops."""


def _helper(write_fd: int, keys_fd: int, context_dir: str, dockerfile: str, cache_dir) -> None:
    import select

    from builder.context.metacache import MetadataCache
    from builder.context.source import BuildContext

    # The digests the cache already has are used; new ones are recorded only after the
    # build has its selections (recording 20,000 of them is not on the build's path).
    ctx = BuildContext.from_directory(context_dir, dockerfile=dockerfile)
    cache = MetadataCache(cache_dir)
    hasher = ctx.hasher
    # A new store has no cache yet: creating its database is for after the selections.
    known_before = cache.load_relative(ctx.root) if cache.path.is_file() else {}
    hasher.preload(known_before)
    hasher.split_small = True  # single-threaded: a second hasher is forked while a core idles
    started = time.time_ns()

    told: list = []  # [keys] once the build has parsed the Dockerfile ([[]]: nothing to do)
    requests = os.fdopen(keys_fd, "rb")  # the keys, then the build's request for digests

    def hear(block: bool) -> None:
        if told or not (block or select.select([keys_fd], [], [], 0)[0]):
            return
        try:
            told.append(_read_frame(requests))  # marshal keeps the keys' tuples
        except (OSError, ValueError, EOFError, TypeError):
            told.append([])  # the build closed the pipe: nothing to select

    def interrupt() -> None:
        hear(block=False)
        if told and FULL_TREE not in told[0]:
            raise _NotNeeded

    # On speculation, while the build parses: walk (not read) the whole context.
    try:
        speculative = ctx.walk(["."], interrupt=interrupt)
    except _NotNeeded:
        speculative = None
    except Exception:
        speculative = None  # the build meets it again and reports it
    hear(block=True)
    keys = told[0]
    selections = {}
    whole = None
    for key in keys:
        sources, excludes, parents = key
        try:
            if key == FULL_TREE and speculative is not None:
                made = ctx.select_walked(speculative, save=False)
                speculative = None
            else:
                made = ctx.select(list(sources), excludes=list(excludes), parents=parents, save=False)
        except Exception:
            continue  # the build meets it again and reports it
        if whole is None and not any(e.strip() for e in excludes) and any(m.paths == (".",) for m in made.matches):
            whole = made  # a walk of everything: its file list prunes the cache, after the build has it
        # Only what a cached COPY needs: two NUL-joined columns marshal in a few milliseconds
        # where 20,000 entries as objects would take tens of them, each way.
        selections[key] = (len(made.entries), "\0".join(map(_SOURCE, made.entries)),
                           "\0".join(map(_FINGERPRINT, made.entries)),
                           [(m.pattern, m.paths, m.is_dir, m.types, m.wildcard) for m in made.matches],
                           made.digest)
    if not selections:
        return
    known = hasher.known()
    with os.fdopen(write_fd, "wb") as pipe:
        _write_frame(pipe, (str(ctx.root), selections))
        pipe.flush()
        # The build has what a cached COPY needs; the digests are saved for the builds after
        # it (as of when reading began, for the racy-file rule) ...
        try:
            root = str(ctx.root)
            complete = ctx.complete_walk(whole) if whole is not None else None
            for rel, entry in known.items():
                if known_before.get(rel) != entry:
                    cache.record(root, rel, entry[:5], entry[5], started)
            cache.flush(prune={root: complete} if complete is not None else None)
            cache.close()
        finally:
            _write_frame(pipe, True)  # saved
            pipe.flush()
        # ... and sent to this build only if it walks for itself (a COPY that runs, or one not
        # prepared here). The end of the pipe says it will not.
        while asked := requests.read(1):
            if asked == b"D":
                _write_frame(pipe, known)
                break
