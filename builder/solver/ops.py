"""The ops behind build steps: resolve a base image, WORKDIR, COPY/ADD, RUN.

``BuildOps`` is what the solver calls (``resolve_base``, ``inputs``,
``execute``). It works on layer snapshots in the content store: a step's
root filesystem is the stack of its parent's layer snapshots; a step's
result is a new layer (a directory of just what changed) written as a blob
by the ``LayerWriter`` and kept as a snapshot for the steps after it.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
import threading
from pathlib import Path

from builder.context.warmup import copy_source_keys, is_url as _is_url
from builder.errors import PybuildError
from builder.frontend.errors import DockerfileError
from builder.frontend.instructions import (
    AddInstruction,
    CopyInstruction,
    Instruction,
    RunInstruction,
    WorkdirInstruction,
)
from builder.frontend.stages import PROXY_ARGS
from builder.image.overlayfs import is_opaque, is_whiteout
from builder.solver.cachekey import KeyInputs, sorted_pairs
from builder.solver.metadata import DEFAULT_PATH, ConfigState, apply_metadata, created_by
from builder.solver.state import HistoryEntry, LayerRef, StepState


class StepFailed(PybuildError):
    """A RUN step exited non-zero, or a file op failed; carries the output's tail."""

    def __init__(self, message: str, output_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.output_tail = output_tail or []


def _canonical(instr: Instruction, drop: tuple[str, ...] = ()) -> str:
    data = instr.to_json()
    for k in ("line", "end_line", *drop):
        data.pop(k, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------ snapshots


def layer_dirs(store, layers: tuple[LayerRef, ...]) -> list[Path]:
    """The snapshot directories of ``layers``, bottom first (unpacking any that are missing)."""
    out = []
    for layer in layers:
        path = store.snapshot_path(layer.diff_id)
        if not path.is_dir():
            store.record_layer(layer.digest, layer.diff_id, layer.media_type)
            path = store.layer_snapshot(layer.diff_id)
        out.append(path)
    return out


class MergedView:
    """Read-only lookups in a stack of layer snapshots, honouring overlay whiteouts."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = list(reversed(dirs))  # top layer first

    def lstat(self, path: str) -> tuple[Path, os.stat_result] | None:
        """The topmost entry for ``path`` (absolute, inside the image) and its stat."""
        rel = path.strip("/")
        parts = [p for p in rel.split("/") if p]
        for d in self.dirs:
            cur = d
            hidden = False
            for i, part in enumerate(parts):
                cur = cur / part
                try:
                    st = os.lstat(cur)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if is_whiteout(st):
                    hidden = True  # deleted in this layer
                    break
                if i == len(parts) - 1:
                    return cur, st
                if not stat.S_ISDIR(st.st_mode):
                    break
                if is_opaque(cur):
                    # Lower layers are hidden below this directory.
                    rest = d.joinpath(*parts)
                    try:
                        return rest, os.lstat(rest)
                    except (FileNotFoundError, NotADirectoryError):
                        hidden = True
                        break
            else:
                if not parts:
                    return d, os.lstat(d)
            if hidden:
                return None
        return None

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        found = self.lstat(path)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        with open(found[0], "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")


def resolve_owner(spec: str | None, view: MergedView, what: str) -> tuple[int, int] | None:
    """``--chown=user[:group]`` to ids, names looked up in the stage's /etc/passwd and /etc/group."""
    if not spec:
        return None
    user, _, group = spec.partition(":")

    def lookup(name: str, file: str) -> tuple[int, int] | None:
        # passwd: name:x:uid:gid:...; group: name:x:gid:members
        text = view.read_text(file) or ""
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name:
                try:
                    return int(fields[2]), int(fields[3]) if file == "/etc/passwd" else 0
                except (ValueError, IndexError):
                    return None
        return None

    if user.isdigit():
        uid, gid = int(user), int(user) if not group else None
    else:
        found = lookup(user, "/etc/passwd")
        if found is None:
            raise DockerfileError(f"{what}: unable to find user {user}: no matching entries in passwd file",
                                  hint="use a numeric uid, or create the user in an earlier step")
        uid, gid = found
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = lookup(group, "/etc/group")
            if g is None:
                raise DockerfileError(f"{what}: unable to find group {group}: no matching entries in group file",
                                      hint="use a numeric gid, or create the group in an earlier step")
            gid = g[0]
    return uid, gid if gid is not None else uid


# ------------------------------------------------------------------ the ops


class BuildOps:
    """Real op runners over the content store (see ``builder.solver.solver.Ops``)."""

    def __init__(self, store, options, dockerfile, progress, context=None) -> None:
        from builder.build import source_date_epoch
        from builder.image.layer_writer import LayerWriter

        self.store = store
        self.options = options
        self.dockerfile = dockerfile
        self.progress = progress
        self.writer = LayerWriter(source_date_epoch=source_date_epoch())
        self.context_dir = None if options.context == "-" else Path(options.context).resolve()
        self.context_id = str(self.context_dir or "-")
        self._context = context
        self._owns_context = context is None
        self._context_lock = threading.Lock()
        self._work = Path(store.scratch.path) / "build"
        self._work.mkdir(parents=True, exist_ok=True)
        self._selections: dict[tuple[int, int], object] = {}
        self._downloads: dict[str, tuple[Path, str]] = {}
        self._snapshotter = None
        self._executor = None
        self._secret_values: dict[str, bytes] | None = None
        self.pulled: set[str] = set()  # base images this build had to pull
        self._prefetched: dict[tuple, object] = {}  # (sources, excludes, parents) -> Future[Selection]
        self._closing = threading.Event()
        self._prefetch_done = threading.Event()
        self._prefetch_done.set()

    def prefetch(self, stages) -> None:
        """Start selecting and hashing the context files of COPY/ADD steps now, on a background
        thread, so it overlaps resolving base images and importing cache (a fresh CI checkout
        hashes every file). Only sources without variables: the step itself checks the result
        is for exactly the sources it expanded to."""
        if self.context_dir is None:
            return
        keys = copy_source_keys(stages)
        if not keys:
            return
        from concurrent.futures import Future

        futures = {key: Future() for key in keys}
        self._prefetched.update(futures)

        def work() -> None:
            try:
                for key, future in futures.items():
                    if self._closing.is_set() or not future.set_running_or_notify_cancel():
                        continue
                    try:
                        future.set_result(self._prefetch_one(key))
                    except BaseException as exc:  # the step that uses it reports it
                        future.set_exception(exc)
            finally:
                self._prefetch_done.set()

        self._prefetch_done.clear()
        # A daemon thread: a build stopped early (an error, Ctrl-C) neither waits for a big
        # context's hashing nor keeps the process alive for it.
        threading.Thread(target=work, name="prefetch", daemon=True).start()

    def _prefetch_one(self, key):
        context = self.context()
        warmup = getattr(self.options, "context_warmup", None)

        def select():
            return context.select(list(key[0]), excludes=list(key[1]), parents=key[2])

        made = warmup.selection(key, context.root, select) if warmup is not None else None
        return made if made is not None else select()

    def close(self) -> None:
        self._closing.set()
        for future in self._prefetched.values():
            future.cancel()
        # Never close the context under a prefetch still hashing (a build stopped early: its
        # process is exiting anyway); one that has only its loop to finish is waited for, so
        # the digests it made reach the metadata cache.
        busy = any(f.running() for f in self._prefetched.values())
        if not busy:
            busy = not self._prefetch_done.wait(timeout=5)
        if self._context is not None and self._owns_context and not busy:
            self._context.close()
        shutil.rmtree(self._work, ignore_errors=True)

    # -------------------------------------------------------------- base images

    def resolve_base(self, ref: str, platform: str) -> tuple[StepState, str]:
        """A base image as a state and its manifest digest (pulled when not in the store)."""
        from builder.image.oci import Platform
        from builder.store.errors import ImageNotFoundError

        if ref == "scratch":
            cfg = ConfigState(env=(f"PATH={DEFAULT_PATH}",))
            return StepState(key="", config=cfg, platform=platform), "scratch"
        want = Platform.parse(platform)
        try:
            if self.options.pull:
                raise ImageNotFoundError("--pull")
            image = self.store.get_image(ref, want)
        except ImageNotFoundError:
            image = self._pull(ref, want)
            self.pulled.add(ref)
        cfg = image.config
        c = cfg.config
        hc = None
        if c.healthcheck is not None:
            h = c.healthcheck
            hc = (tuple(h.test or ()), h.interval, h.timeout, h.start_period, h.start_interval, h.retries)
        env = tuple(c.env or ())
        if not any(e.startswith("PATH=") for e in env):
            env = env + (f"PATH={DEFAULT_PATH}",)
        state = ConfigState(
            env=env, user=c.user or "", working_dir=c.working_dir or "",
            entrypoint=tuple(c.entrypoint) if c.entrypoint is not None else None,
            cmd=tuple(c.cmd) if c.cmd is not None else None, shell=tuple(c.shell) if c.shell else None,
            exposed_ports=tuple(sorted(c.exposed_ports or ())), volumes=tuple(c.volumes or ()),
            labels=tuple(sorted((c.labels or {}).items())), stop_signal=c.stop_signal, healthcheck=hc,
            on_build=tuple(c.on_build or ()), author=cfg.author,
        )
        layers = tuple(LayerRef(diff_id, d.digest, d.size, d.media_type)
                       for diff_id, d in zip(image.diff_ids, image.layers))
        history = tuple(HistoryEntry(h.created_by or "", h.empty_layer, h.comment) for h in cfg.history)
        base_config = cfg.to_json().decode()
        return StepState(key="", layers=layers, config=state, history=history, platform=platform,
                         base_config=base_config), image.manifest_digest

    def _pull(self, ref: str, platform):
        from builder.registry.api import pull_to_store

        self.progress.info(f"pulling {ref}")
        # Layers stay lazy: a step fetches them only if it has to run on top of them.
        from builder.registry.config import load_registry_options

        return pull_to_store(ref, self.store, platform=platform, lazy_layers=True,
                             options=load_registry_options(self.store.root))

    # -------------------------------------------------------------- keys

    def inputs(self, ctx) -> KeyInputs:
        instr = ctx.instruction
        parent = ctx.parent
        if isinstance(instr, WorkdirInstruction):
            return KeyInputs(op="workdir", instruction=_canonical(instr), parent=parent.key,
                             env=(("USER", parent.config.user),))
        if isinstance(instr, CopyInstruction):
            return self._copy_inputs(ctx)
        if isinstance(instr, RunInstruction):
            return self._run_inputs(ctx)
        raise PybuildError(f"no op for {instr.keyword}")

    def execute(self, ctx, key: str) -> StepState:
        instr = ctx.instruction
        if isinstance(instr, WorkdirInstruction):
            return self._workdir(ctx, key)
        if isinstance(instr, CopyInstruction):
            return self._copy(ctx, key)
        if isinstance(instr, RunInstruction):
            return self._run(ctx, key)
        raise PybuildError(f"no op for {instr.keyword}")

    # -------------------------------------------------------------- layers

    def _commit(self, ctx, key: str, directory: Path, history: str, config: ConfigState,
                overlay: bool = False, deleted: list[str] = ()) -> StepState:
        """Write ``directory`` as a layer on top of the parent (or no layer if it is empty)."""
        parent = ctx.parent
        if not deleted and not any(os.scandir(directory)):
            shutil.rmtree(directory, ignore_errors=True)
            entry = HistoryEntry(history, empty_layer=True)
            return StepState(key, parent.layers, config, parent.history + (entry,), parent.platform,
                             parent.base_config)
        writer = self.store.blob_writer()
        try:
            blob = self.writer.write(directory, writer, overlay=overlay, deleted=deleted)
            digest, size = writer.commit(expected_digest=blob.digest)
        except BaseException:
            writer.abort()
            raise
        layer = LayerRef(blob.diff_id, digest, size, blob.media_type)
        self.store.record_layer(layer.digest, layer.diff_id, layer.media_type)
        self.store.adopt_snapshot(layer.diff_id, directory)
        return StepState(key, parent.layers + (layer,), config,
                         parent.history + (HistoryEntry(history),), parent.platform, parent.base_config)

    def _scratch_dir(self, prefix: str) -> Path:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=prefix, dir=self._work))

    # -------------------------------------------------------------- WORKDIR

    def _workdir(self, ctx, key: str) -> StepState:
        parent = ctx.parent
        config = apply_metadata(parent.config, ctx.instruction)
        history = created_by(parent.config, ctx.instruction)
        path = config.working_dir
        view = MergedView(layer_dirs(self.store, parent.layers))
        stage_dir = self._scratch_dir("workdir-")
        missing = []
        cur = "/"
        for part in [p for p in path.split("/") if p]:
            cur = posixpath.join(cur, part)
            found = view.lstat(cur)
            if found is None:
                missing.append(cur)
            elif not stat.S_ISDIR(found[1].st_mode) and not stat.S_ISLNK(found[1].st_mode):
                raise StepFailed(f"WORKDIR {path}: {cur} exists and is not a directory")
        if missing:
            owner = resolve_owner(parent.config.user, view, "WORKDIR") if parent.config.user else None
            _mirror_parents(view, stage_dir, missing[0])
            for d in missing:
                target = stage_dir / d.lstrip("/")
                target.mkdir(mode=0o755)
                os.chmod(target, 0o755)
                if owner:
                    os.lchown(target, *owner)
        return self._commit(ctx, key, stage_dir, history, config)

    # -------------------------------------------------------------- COPY / ADD

    def context(self):
        """The build context, opened on first use (a build without COPY never walks it)."""
        from builder.context import BuildContext

        with self._context_lock:
            if self._context is None:
                if self.context_dir is None:
                    raise PybuildError("a context on stdin is not supported by this build yet")
                self._context = BuildContext.from_directory(
                    self.context_dir, dockerfile=self.options.dockerfile,
                    cache_dir=self.store.root / "cache" / "context")
                self._context.hasher.warmup = getattr(self.options, "context_warmup", None)
            return self._context

    def _copy_inputs(self, ctx) -> KeyInputs:
        instr: CopyInstruction = ctx.instruction
        parent = ctx.parent
        common = dict(op="add" if isinstance(instr, AddInstruction) else "copy",
                      instruction=_canonical(instr), parent=parent.key, platform=parent.platform)
        if is_linked(instr):
            # --link: the layer does not depend on the parent's files, so neither does the key
            # (only on where a relative destination lands).
            common["parent"] = None
            common["args"] = (("WORKDIR", parent.config.working_dir),)
        source_from = getattr(instr, "from_", None)
        if source_from:
            idx = self._stage_index(source_from)
            src = ctx.stage_results.get(idx) if idx is not None else None
            if src is not None:
                return KeyInputs(sources=src.key, extra=(("from", f"stage {source_from}"),), **common)
            state, digest = self.resolve_base(source_from, parent.platform)
            return KeyInputs(sources=digest, extra=(("from", f"image {source_from}"),), **common)
        if not instr.sources:  # only heredoc contents: the instruction holds them
            return KeyInputs(sources=None, **common)
        urls = [s for s in instr.sources if _is_url(s)]
        if urls:
            if not isinstance(instr, AddInstruction):
                raise DockerfileError(f"COPY cannot copy from a URL ({urls[0]}): use ADD",
                                      line=instr.line, col=instr.col, hint="ADD <url> <dest>")
            # With --checksum the content is known without downloading it again.
            files = {u: instr.checksum if getattr(instr, "checksum", None) and len(urls) == 1
                     else self._fetch(instr, u)[1] for u in urls}
            local = [s for s in instr.sources if not _is_url(s)]
            sel = self.context().select(local, excludes=instr.excludes, parents=instr.parents) if local else None
            if sel is not None:
                files.update(sel.files)
            digest = "sha256:" + hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()
            return KeyInputs(sources=digest, files=files, **common)
        ahead = self._prefetched.get((tuple(instr.sources), tuple(instr.excludes), bool(instr.parents)))
        sel = ahead.result() if ahead is not None else \
            self.context().select(instr.sources, excludes=instr.excludes, parents=instr.parents)
        self._selections[(ctx.stage.index, ctx.pos)] = sel
        return KeyInputs(sources=sel.digest, files=sel.files, **common)

    def _copy(self, ctx, key: str) -> StepState:
        instr: CopyInstruction = ctx.instruction
        parent = ctx.parent
        view = MergedView(layer_dirs(self.store, parent.layers))
        try:
            owner = resolve_owner(instr.chown, view, f"{instr.keyword} --chown") or (0, 0)
        except DockerfileError as exc:
            exc.line, exc.col, exc.filename = instr.line, instr.col, self.dockerfile.filename
            raise
        chmod = _chmod(instr)
        dest = instr.dest
        if not dest.startswith("/"):
            dest = posixpath.join(parent.config.working_dir or "/", dest)
        dest_is_dir = instr.dest.endswith("/") or instr.dest in (".", "./") or _is_dir(view, dest)
        staging = self._scratch_dir("copy-")
        n_sources = len(instr.sources) + len(instr.contents)
        cleanup = None
        try:
            selection = None
            source_from = getattr(instr, "from_", None)
            if source_from:
                selection, cleanup = self._select_from(ctx, source_from, instr)
            elif instr.sources and not any(_is_url(s) for s in instr.sources):
                selection = self._selections.pop((ctx.stage.index, ctx.pos), None) or \
                    self.context().select(instr.sources, excludes=instr.excludes, parents=instr.parents)
            if selection is not None:
                single_file = (n_sources == 1 and len(selection.entries) == 1
                               and not any(m.is_dir for m in selection.matches)
                               and selection.entries[0].type != "dir")
            else:  # a heredoc or a URL
                single_file = n_sources == 1
            if n_sources > 1 and not dest_is_dir and not instr.parents:
                raise DockerfileError(
                    f"when using {instr.keyword} with more than one source file, the destination must "
                    f"be a directory and end with a /", line=instr.line, col=instr.col,
                    hint=f"write the destination as {instr.dest.rstrip('/')}/")
            linked = is_linked(instr)
            if not linked:  # with --link the layer does not look at the parent's directories
                _mirror_parents(view, staging, dest)
            if dest_is_dir or not single_file:
                target = staging / dest.lstrip("/")
                if linked:
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    _mirror_dir(view, dest, target)
                if selection is not None:
                    self._materialize(instr, selection, target, owner, chmod)
                for c in instr.contents:
                    _write_content(target / c.name, c.data, owner, chmod)
                for url in [s for s in instr.sources if _is_url(s)]:
                    path, _ = self._fetch(instr, url)
                    name = _url_name(url)
                    _place_file(path, target / name, owner, chmod)
            else:
                final = staging / dest.lstrip("/")
                final.parent.mkdir(parents=True, exist_ok=True)
                if selection is not None:
                    tmp = self._scratch_dir("one-")
                    self._materialize(instr, selection, tmp, owner, chmod)
                    (only,) = [p for p in tmp.iterdir()]
                    os.rename(only, final)
                    shutil.rmtree(tmp, ignore_errors=True)
                elif instr.contents:
                    _write_content(final, instr.contents[0].data, owner, chmod)
                else:
                    path, _ = self._fetch(instr, instr.sources[0])
                    _place_file(path, final, owner, chmod)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if cleanup is not None:
                cleanup()
        history = created_by(parent.config, instr)
        return self._commit(ctx, key, staging, history, parent.config)

    def _materialize(self, instr, selection, target: Path, owner, chmod) -> None:
        from builder.context import copy_selection
        from builder.image.layer import apply_layer


        if isinstance(instr, AddInstruction) and instr.unpack is not False:
            # ADD of a local archive extracts it (tar, gzip, bzip2, xz, zstd).
            archives = [e for e in selection.entries if e.type == "file" and
                        _is_archive(selection.source_path(e))]
            if archives:
                rest = tuple(e for e in selection.entries if e not in archives)
                for e in archives:
                    # Opened like copy_selection opens sources: never through a link swapped in since
                    # the selection, never blocking on a FIFO, and checked against the digest the
                    # cache key used (the staging dir is discarded if it does not match).
                    with _open_source_file(selection.source_path(e), e.source) as fh:
                        reader = _DigestCheckingReader(fh, e.content, e.source)
                        apply_layer(reader, target / posixpath.dirname(e.path), None)
                        reader.finish()
                from builder.context.source import Selection

                selection = Selection(selection.root, rest, selection.matches)
        copy_selection(selection, target, chown=owner)
        if chmod is not None:
            # Files and directories the COPY created get the mode (symlinks have none).
            for e in selection.entries:
                if e.type in ("file", "dir"):
                    path = target / e.path if e.path else target
                    os.chmod(path, chmod(e.mode, e.type == "dir"))

    def _select_from(self, ctx, name: str, instr):
        """Select COPY --from sources in another stage's (or an image's) file tree."""
        from builder.context import BuildContext

        idx = self._stage_index(name)
        state = ctx.stage_results.get(idx) if idx is not None else None
        if state is None:
            state, _ = self.resolve_base(name, ctx.parent.platform)
        dirs = layer_dirs(self.store, state.layers)
        snap = self.snapshotter().prepare(dirs)
        try:
            tree = BuildContext(snap.mount_dir)
            sel = tree.select(instr.sources, excludes=instr.excludes, parents=instr.parents)
        except BaseException:
            self.snapshotter().cleanup(snap)
            raise
        return sel, lambda: self.snapshotter().cleanup(snap)

    def _fetch(self, instr, url: str) -> tuple[Path, str]:
        """Download an ADD URL once per build; verify --checksum; returns (file, digest)."""
        with self._context_lock:
            if url in self._downloads:
                return self._downloads[url]
        import requests

        path = self._scratch_dir("url-") / "download"
        h = hashlib.sha256()
        try:
            with requests.get(url, stream=True, timeout=60) as resp:
                resp.raise_for_status()
                with open(path, "wb") as out:
                    for chunk in resp.iter_content(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
        except requests.RequestException as exc:
            raise StepFailed(f"ADD {url}: download failed: {exc}") from None
        digest = "sha256:" + h.hexdigest()
        checksum = getattr(instr, "checksum", None)
        if checksum and checksum != digest:
            raise StepFailed(f"ADD {url}: checksum mismatch: expected {checksum}, got {digest}")
        with self._context_lock:
            self._downloads[url] = (path, digest)
        return path, digest

    def cancel(self) -> None:
        """Stop: kill running RUN steps (the build was interrupted)."""
        if self._executor is not None:
            self._executor.kill_all()

    def release(self, ctx) -> None:
        """Forget per-step state kept between ``inputs`` and ``execute`` (e.g. after a cache hit)."""
        self._selections.pop((ctx.stage.index, ctx.pos), None)

    # -------------------------------------------------------------- RUN

    def _run_inputs(self, ctx) -> KeyInputs:
        instr: RunInstruction = ctx.instruction
        parent = ctx.parent
        extra = []
        for m in instr.mounts:
            if m.type == "bind" and m.from_:
                src = ctx.stage_results.get(self._stage_index(m.from_))
                extra.append((f"mount:{m.target}", src.key if src else f"image:{m.from_}"))
            elif m.type == "bind":
                extra.append((f"mount:{m.target}", self._context_digest([m.source or "."])))
        return KeyInputs(
            op="run", instruction=_canonical(instr, drop=("mount_specs",)), parent=parent.key,
            env=sorted_pairs(run_environment(parent.config, ctx.scope)),
            args=(("USER", parent.config.user), ("WORKDIR", parent.config.working_dir)),
            extra=tuple(sorted(extra)), platform=parent.platform,
        )

    def _stage_index(self, name: str) -> int | None:
        for stage in self.dockerfile.stages:
            if stage.name == name.lower() or str(stage.index) == name:
                return stage.index
        return None

    def _context_digest(self, patterns: list[str]) -> str:
        return self.context().select(patterns).digest

    def snapshotter(self):
        from builder.snapshot import Snapshotter

        if self._snapshotter is None:
            path = self._work / "snapshots"
            path.mkdir(exist_ok=True)
            # PYBUILD_SNAPSHOTTER=copy forces the copy-based fallback (both give the same layers).
            mode = os.environ.get("PYBUILD_SNAPSHOTTER", "auto")
            if mode not in ("auto", "overlay", "copy"):
                raise PybuildError(f"PYBUILD_SNAPSHOTTER={mode!r}: expected auto, overlay or copy")
            self._snapshotter = Snapshotter(path, mode=mode)
        return self._snapshotter

    def _run(self, ctx, key: str) -> StepState:
        from collections import deque

        from builder.runtime.executor import Executor, ProcessSpec

        instr: RunInstruction = ctx.instruction
        parent = ctx.parent
        cfg = parent.config
        argv = run_argv(cfg, instr)
        env = run_environment(cfg, ctx.scope)
        spec = ProcessSpec(args=argv, env=[f"{k}={v}" for k, v in env.items()],
                           cwd=cfg.working_dir or "/", user=cfg.user)
        network = "none" if instr.network == "none" or self.options.network == "none" else "host"
        tail: deque[str] = deque(maxlen=20)
        partial = {"out": b""}
        redact = self._redactor()  # --secret values never reach logs, errors or the report

        def sink(data: bytes) -> None:
            text = partial["out"] + data
            *lines, partial["out"] = text.split(b"\n")
            for raw in lines:
                line = (redact(raw) if redact else raw).decode("utf-8", "replace")
                tail.append(line)
                ctx.log(line)

        dirs = layer_dirs(self.store, parent.layers)
        snapper = self.snapshotter()
        with self.store.lease_snapshots([lr.diff_id for lr in parent.layers]):
            snap = snapper.prepare(dirs)
            cleanups = []
            try:
                mounts = self._run_mounts(ctx, instr, cleanups, spec.env)
                if self._executor is None:
                    with self._context_lock:
                        if self._executor is None:
                            self._executor = Executor()
                code = self._executor.run(snap.mount_dir, spec, mounts, network, stdout=sink, stderr=sink)
                if partial["out"]:
                    sink(b"\n")
                diff = snapper.commit(snap)
                if code != 0:
                    shown = " ".join(argv)
                    shown = shown if len(shown) <= 200 else shown[:197] + "..."
                    raise StepFailed(f"process \"{shown}\" did not complete successfully: exit code: {code}",
                                     list(tail))
                history = created_by(cfg, instr)
                upper = self._scratch_dir("run-")
                os.rmdir(upper)
                os.rename(diff.upper, upper)
                return self._commit(ctx, key, upper, history, cfg, overlay=True, deleted=diff.deleted)
            finally:
                for fn in reversed(cleanups):
                    fn()
                snapper.cleanup(snap)

    def _run_mounts(self, ctx, instr: RunInstruction, cleanups: list, env: list[str]) -> list:
        """The step's mounts, prepared; a secret mount with ``env=`` also adds to ``env``."""
        from builder.runtime.executor import RunMount

        out = []
        for m in instr.mounts:
            if m.type == "tmpfs":
                out.append(RunMount(target=m.target, type="tmpfs", size=m.size))
            elif m.type == "cache":
                out.append(RunMount(target=m.target, type="cache", source=self._cache_mount(m, cleanups)))
            elif m.type == "secret":
                data = self._secret(m)
                if data is None:
                    continue
                if m.env:  # env=NAME: the value as an environment variable (and a file only if target= too)
                    env.append(f"{m.env}={os.fsdecode(data)}")
                if m.target:
                    out.append(RunMount(target=m.target, type="secret", data=data,
                                        mode=m.mode if m.mode is not None else 0o400,
                                        uid=m.uid or 0, gid=m.gid or 0))
            elif m.type == "ssh":
                sock = self._ssh_socket(m)
                if sock is not None:
                    out.append(RunMount(target=m.target, type="bind", source=Path(sock), readonly=False))
            elif m.type == "bind":
                out.append(RunMount(target=m.target, type="bind", source=self._bind_source(ctx, m, cleanups),
                                    readonly=m.readonly))
        return out

    def _bind_source(self, ctx, m, cleanups: list) -> Path:
        from builder.context.scoped import NotInRoot, resolve

        if m.from_:
            idx = self._stage_index(m.from_)
            state = ctx.stage_results.get(idx) if idx is not None else None
            if state is None:
                state, _ = self.resolve_base(m.from_, ctx.parent.platform)
            snap = self.snapshotter().prepare(layer_dirs(self.store, state.layers))
            cleanups.append(lambda: self.snapshotter().cleanup(snap))
            root = str(snap.mount_dir)
        else:
            root = str(self.context().root)
        parts = [p for p in (m.source or "").split("/") if p and p != "."]
        try:
            found = resolve(root, parts)
        except NotInRoot:
            raise StepFailed(f"RUN --mount source {m.source!r} not found") from None
        return Path(root, *found.parts)

    def _cache_mount(self, m, cleanups: list) -> Path:
        from builder.store.locks import file_lock

        ident = hashlib.sha256(m.id.encode()).hexdigest()[:32]
        base = self.store.root / "cache" / "mounts"
        path = base / ident
        base.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            path.mkdir(mode=m.mode if m.mode is not None else 0o755, exist_ok=True)
            if m.uid is not None or m.gid is not None:
                os.chown(path, m.uid or 0, m.gid or 0)
        if m.sharing == "locked":
            lock = file_lock(base / f"{ident}.lock", exclusive=True)
            lock.__enter__()
            cleanups.append(lambda: lock.__exit__(None, None, None))
        elif m.sharing == "private":
            # A private cache is not shared with a concurrent step: use a fresh copy.
            priv = Path(self._scratch_dir("cache-"))
            shutil.copytree(path, priv, symlinks=True, dirs_exist_ok=True)
            cleanups.append(lambda: shutil.rmtree(priv, ignore_errors=True))
            return priv
        return path

    def _secret(self, m) -> bytes | None:
        secrets = self._secrets()
        if m.id in secrets:
            return secrets[m.id]
        if m.required:
            raise StepFailed(f"secret {m.id} is required but was not given (--secret id={m.id},src=FILE)")
        return None

    def _secrets(self) -> dict[str, bytes]:
        if self._secret_values is None:
            self._secret_values = parse_secrets(self.options.secrets)
        return self._secret_values

    def _redactor(self):
        from builder.solver.redact import Redactor

        return Redactor.for_secrets(self._secrets().values()) if self.options.secrets else Redactor()

    def _ssh_socket(self, m) -> str | None:
        for spec in self.options.ssh:
            ident, _, path = spec.partition("=")
            if ident == m.id:
                return path or os.environ.get("SSH_AUTH_SOCK")
        if m.required:
            raise StepFailed(f"ssh agent {m.id} is required but was not given (--ssh {m.id})")
        return None


def parse_secrets(specs: list[str]) -> dict[str, bytes]:
    """``--secret id=ID,src=FILE`` / ``id=ID,env=VAR`` (docker's syntax) to values."""
    out: dict[str, bytes] = {}
    for spec in specs:
        fields = {}
        for part in spec.split(","):
            k, eq, v = part.partition("=")
            fields[k.strip()] = v if eq else ""
        ident = fields.get("id") or ""
        src = fields.get("src") or fields.get("source")
        env = fields.get("env")
        if not ident:
            if src:
                ident = os.path.basename(src)
            elif env:
                ident = env
            else:
                raise PybuildError(f"invalid --secret {spec!r}: give id=ID and src=FILE or env=VAR")
        if src:
            try:
                out[ident] = Path(src).read_bytes()
            except OSError as exc:
                raise PybuildError(f"--secret id={ident}: cannot read {src}: {exc.strerror}") from None
        elif env or ident in os.environ:
            name = env or ident
            if name not in os.environ:
                raise PybuildError(f"--secret id={ident}: environment variable {name} is not set")
            out[ident] = os.environ[name].encode()
        else:
            raise PybuildError(f"invalid --secret {spec!r}: give src=FILE or env=VAR")
    return out


def _url_name(url: str) -> str:
    from urllib.parse import urlparse

    name = posixpath.basename(urlparse(url).path)
    return name or "index.html"


def _open_source_file(path: Path, display: str):
    """A context file opened for reading without following a final symlink or blocking on a FIFO,
    and only if it is (still) a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StepFailed(f"cannot read {display!r} from the build context: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise StepFailed(f"{display!r} in the build context stopped being a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _DigestCheckingReader:
    """Reads a source archive while hashing it; ``finish`` drains it and compares with the digest
    its cache key was computed from."""

    def __init__(self, fh, expected: str, display: str) -> None:
        self.fh, self.expected, self.display = fh, expected, display
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.hash.update(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        if self.expected and "sha256:" + self.hash.hexdigest() != self.expected:
            raise StepFailed(f"{self.display!r} changed in the build context while the build was running")


def _is_archive(path: Path) -> bool:
    try:
        with _open_source_file(path, str(path)) as fh:
            head = fh.read(512)
    except (OSError, StepFailed):
        return False
    magics = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00")
    return head.startswith(magics) or (len(head) >= 262 and head[257:262] == b"ustar")


def _chmod(instr):
    """The --chmod of a COPY/ADD as a function (old mode, is_dir) -> new mode, or None."""
    from builder.solver.chmod import ChmodError, parse_chmod

    if instr.chmod is None:
        return None
    try:
        return parse_chmod(instr.chmod)
    except ChmodError as exc:
        raise DockerfileError(str(exc), line=instr.line, col=instr.col,
                              hint="use an octal mode such as 0755, or a symbolic one such as u+x,go-w") from None


def _apply_chmod(path: Path, chmod, default: int) -> None:
    os.chmod(path, chmod(default, False) if chmod is not None else default)


def _is_dir(view: "MergedView", path: str) -> bool:
    found = view.lstat(path)
    return found is not None and stat.S_ISDIR(found[1].st_mode)


def _mirror_dir(view: "MergedView", path: str, target: Path) -> None:
    """Create ``target`` with the metadata ``path`` has in the image, if it exists there."""
    target.mkdir(parents=True, exist_ok=True)
    found = view.lstat(path)
    if found is not None and stat.S_ISDIR(found[1].st_mode):
        st = found[1]
        os.chmod(target, stat.S_IMODE(st.st_mode))
        os.lchown(target, st.st_uid, st.st_gid)


def _write_content(path: Path, data: str, owner, chmod) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8", "surrogateescape"))
    _apply_chmod(path, chmod, 0o644)
    os.lchown(path, *owner)


def _place_file(src: Path, dst: Path, owner, chmod) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    _apply_chmod(dst, chmod, 0o600)
    os.lchown(dst, *owner)


def is_linked(instr) -> bool:
    """COPY/ADD --link whose result can be reused on any parent (no --chown by name)."""
    if not isinstance(instr, CopyInstruction) or not instr.link:
        return False
    chown = instr.chown or ""
    return all(part.isdigit() or part == "" for part in chown.split(":"))


def run_environment(config: ConfigState, scope) -> dict[str, str]:
    """The environment of a RUN step: the image env plus the stage's build args.

    Declared ARGs reach RUN as environment variables (not persisted in the
    image); ENV wins over an ARG of the same name.
    """
    env = {k: v for k, v in scope.build_args.items() if k in PROXY_ARGS}
    env.update({k: v for k, v in scope.args.items() if v is not None})
    env.update(config.env_dict())
    return env


def run_argv(config: ConfigState, instr: RunInstruction) -> list[str]:
    """The process a RUN step starts.

    Shell form runs in the stage's SHELL. A heredoc that is the whole command
    (``RUN <<EOF``) is the script itself; otherwise the line and the heredoc
    bodies are given to the shell together, which reads the heredocs itself.
    """
    if not instr.command.shell_form:
        return list(instr.command.args)
    shell = list(config.run_shell())
    line = instr.command.args[0] if instr.command.args else ""
    docs = instr.heredocs
    if len(docs) == 1 and line.strip() in (f"<<{docs[0].name}", f"<<-{docs[0].name}",
                                           f"<<'{docs[0].name}'", f'<<"{docs[0].name}"'):
        script = docs[0].chomped()
        if script.startswith("#!"):
            # A script with its own interpreter: run that interpreter on it.
            interp = script[2:].splitlines()[0].split()
            return interp + ["-c", script] if interp else shell + [script]
        return shell + [script]
    if docs:
        body = "".join(d.content + ("" if d.content.endswith("\n") or not d.content else "\n") + d.name + "\n"
                       for d in docs)
        return shell + [line + "\n" + body]
    return shell + [line]


def _mirror_parents(view: MergedView, stage_dir: Path, path: str) -> None:
    """Create the parents of ``path`` in ``stage_dir`` with the metadata they have in the image."""
    cur = "/"
    for part in [p for p in posixpath.dirname(path).split("/") if p]:
        cur = posixpath.join(cur, part)
        target = stage_dir / cur.lstrip("/")
        found = view.lstat(cur)
        target.mkdir(mode=0o755, exist_ok=True)
        if found is not None and stat.S_ISDIR(found[1].st_mode):
            st = found[1]
            os.chmod(target, stat.S_IMODE(st.st_mode))
            os.lchown(target, st.st_uid, st.st_gid)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
