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
from typing import Iterator

from builder.errors import PybuildError
from builder.frontend.errors import DockerfileError
from builder.frontend.instructions import (
    AddInstruction,
    CopyInstruction,
    Instruction,
    RunInstruction,
    WorkdirInstruction,
)
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


def snapshot_path(store, diff_id: str) -> Path:
    return store.root / "snapshots" / "sha256" / diff_id.split(":", 1)[1]


def register_layer(store, layer: LayerRef) -> None:
    """Tell the store which blob holds a layer, so its snapshot can be rebuilt from the blob."""
    with store.index.transaction() as db:
        db.execute("INSERT OR IGNORE INTO layers VALUES (?, ?, ?)",
                   (layer.digest, layer.diff_id, layer.media_type))


def adopt_snapshot(store, diff_id: str, directory: Path) -> Path:
    """Keep ``directory`` (what a step wrote) as the snapshot of layer ``diff_id``."""
    target = snapshot_path(store, diff_id)
    if target.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(directory, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(directory, ignore_errors=True)  # another build adopted the same layer
    size = sum(e.stat(follow_symlinks=False).st_size for e in _walk(target))
    store.index.record_snapshot(diff_id, size)
    return target


def _walk(root: Path) -> Iterator[os.DirEntry]:
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                yield e
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)


def layer_dirs(store, layers: tuple[LayerRef, ...]) -> list[Path]:
    """The snapshot directories of ``layers``, bottom first (unpacking any that are missing)."""
    out = []
    for layer in layers:
        path = snapshot_path(store, layer.diff_id)
        if not path.is_dir():
            register_layer(store, layer)
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
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    hidden = True  # whiteout: deleted in this layer
                    break
                if i == len(parts) - 1:
                    return cur, st
                if not stat.S_ISDIR(st.st_mode):
                    break
                try:
                    if os.getxattr(cur, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                        # Opaque: lower layers are hidden below this directory.
                        rest = d.joinpath(*parts)
                        try:
                            st2 = os.lstat(rest)
                            return rest, st2
                        except FileNotFoundError:
                            hidden = True
                            break
                except OSError:
                    pass
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
        text = view.read_text(file) or ""
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == name:
                try:
                    return int(fields[2]), int(fields[3])
                except ValueError:
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

    def __init__(self, store, options, dockerfile, progress) -> None:
        from builder.build import source_date_epoch
        from builder.image.layer_writer import LayerWriter

        self.store = store
        self.options = options
        self.dockerfile = dockerfile
        self.progress = progress
        self.writer = LayerWriter(source_date_epoch=source_date_epoch())
        self.context_dir = None if options.context == "-" else Path(options.context).resolve()
        self.context_id = str(self.context_dir or "-")
        self._context = None
        self._context_lock = threading.Lock()
        self._work = Path(store.scratch.path) / "build"
        self._work.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)

    # -------------------------------------------------------------- base images

    def resolve_base(self, ref: str, platform: str) -> tuple[StepState, str]:
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
            on_build=(), author=cfg.author,
        )
        layers = tuple(LayerRef(diff_id, d.digest, d.size, d.media_type)
                       for diff_id, d in zip(image.diff_ids, image.layers))
        history = tuple(HistoryEntry(h.created_by or "", h.empty_layer, h.comment) for h in cfg.history)
        base_config = cfg.to_json().decode()
        return StepState(key="", layers=layers, config=state, history=history, platform=platform,
                         base_config=base_config), image.manifest_digest

    def _pull(self, ref: str, platform):
        try:
            from builder.registry import pull_to_store
        except ImportError:
            pull_to_store = None
        if pull_to_store is None:
            raise PybuildError(f"base image {ref} is not in the store",)
        return pull_to_store(ref, self.store, platform=platform)

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
                overlay: bool = False) -> StepState:
        """Write ``directory`` as a layer on top of the parent (or no layer if it is empty)."""
        parent = ctx.parent
        if not any(os.scandir(directory)):
            shutil.rmtree(directory, ignore_errors=True)
            entry = HistoryEntry(history, empty_layer=True)
            return StepState(key, parent.layers, config, parent.history + (entry,), parent.platform,
                             parent.base_config)
        writer = self.store.blob_writer()
        try:
            blob = self.writer.write(directory, writer, overlay=overlay)
            digest, size = writer.commit(expected_digest=blob.digest)
        except BaseException:
            writer.abort()
            raise
        layer = LayerRef(blob.diff_id, digest, size, blob.media_type)
        register_layer(self.store, layer)
        adopt_snapshot(self.store, layer.diff_id, directory)
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

    def _copy_inputs(self, ctx) -> KeyInputs:
        raise PybuildError("COPY/ADD are not wired yet")

    def _copy(self, ctx, key: str) -> StepState:
        raise PybuildError("COPY/ADD are not wired yet")

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
        raise PybuildError("bind mounts from the context are not wired yet")

    def _run(self, ctx, key: str) -> StepState:
        raise PybuildError("RUN is not wired yet")


def run_environment(config: ConfigState, scope) -> dict[str, str]:
    """The environment of a RUN step: the image env plus the stage's build args.

    Declared ARGs reach RUN as environment variables (not persisted in the
    image); ENV wins over an ARG of the same name.
    """
    env = {k: v for k, v in scope.args.items() if v is not None}
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
