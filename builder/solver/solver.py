"""The solver: walk the build graph, reuse cached steps, run the rest, in parallel.

Stages run on a thread pool (``--jobs``), each stage's steps in order; a step
that reads another stage waits for that stage. Every step gets a content
cache key (``cachekey.py``); a key found in the store's cache index is
reused, otherwise the op runs and its result is recorded. Steps with the
same key (identical steps in different stages) run once. Every decision goes
into the ``BuildReport``, with the reason for each miss.

Side effects go through small interfaces: the content store, and the op
runners in ``ops.py`` (file ops, the RUN executor, base-image resolution).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from builder.errors import PybuildError
from builder.frontend.errors import DockerfileError
from builder.frontend.instructions import (
    ArgInstruction,
    CopyInstruction,
    Instruction,
    RunInstruction,
    WorkdirInstruction,
)
from builder.frontend.stages import (
    Dockerfile,
    ExpansionScope,
    PLATFORM_ARGS,
    Stage,
    expand_from,
    resolve_meta_args,
    unused_build_args,
)
from builder.progress import Progress
from builder.solver.cachekey import KeyInputs, MissReason, cache_key, explain_miss, sorted_pairs
from builder.solver.graph import BuildGraph, build_graph
from builder.solver.metadata import apply_metadata, created_by
from builder.solver.report import BuildReport, StepReport
from builder.solver.state import HistoryEntry, StepState


def parse_trigger(expression: str, df: Dockerfile, line: int) -> Instruction:
    """An ONBUILD trigger from a base image's config, typed (reported at the FROM's line)."""
    from builder.frontend.stages import parse_trigger as parse_one

    return parse_one(expression, df.escape, df.filename, line)


def rebase(parent: StepState, linked: StepState, key: str) -> StepState:
    """A ``--link`` step's result put on ``parent``: its own layer (if any) on top of the parent's.

    The state's key mixes the step's key with the parent's, so the steps after it still depend
    on everything below them.
    """
    own = linked.history[-1]
    layers = parent.layers + ((linked.layers[-1],) if not own.empty_layer else ())
    mixed = "sha256:" + hashlib.sha256(f"{key}\0{parent.key}".encode()).hexdigest()
    return StepState(mixed, layers, parent.config, parent.history + (own,), parent.platform,
                     parent.base_config)


class BuildError(PybuildError):
    """A step failed; the message names the step (``Dockerfile:12 RUN make``) and shows the
    last lines of its output."""

    def __init__(self, message: str, output_tail: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.output_tail = output_tail or []
        self.hint = hint

    def render(self) -> str:
        lines = [f"error: {self}"]
        if self.output_tail:
            lines.append("last lines of its output:")
            lines.extend(f"  | {line}" for line in self.output_tail[-10:])
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


@dataclass
class BuildRequest:
    dockerfile: Dockerfile
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    no_cache_filter: set[str] = field(default_factory=set)
    platform: str = "linux/amd64"
    jobs: int = 2
    context_id: str = ""  # identifies the context for miss explanations (its absolute path)


@dataclass
class StepContext:
    """What an op needs to run one step."""

    stage: Stage
    pos: int
    instruction: Instruction
    parent: StepState
    scope: ExpansionScope
    stage_results: dict[int, StepState]
    label: str
    log: Callable[[str], None]


class Ops:
    """The op runners the solver calls (``ops.py`` has the real ones)."""

    def resolve_base(self, ref: str, platform: str) -> tuple[StepState, str]:
        """A base image as a state (its layers and config) and its digest."""
        raise NotImplementedError

    def inputs(self, ctx: StepContext) -> KeyInputs:
        """The key inputs of a COPY/ADD/RUN/WORKDIR step (content digests of what it reads)."""
        raise NotImplementedError

    def execute(self, ctx: StepContext, key: str) -> StepState:
        """Run a COPY/ADD/RUN/WORKDIR step on ``ctx.parent``; returns the new state."""
        raise NotImplementedError


def _canonical(instr: Instruction) -> str:
    data = instr.to_json()
    for k in ("line", "end_line"):
        data.pop(k, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _first_line(instr: Instruction) -> str:
    text = " ".join(instr.original.split()) if instr.original else instr.keyword
    return text if len(text) <= 120 else text[:117] + "..."


class Solver:
    def __init__(self, store, ops: Ops, progress: Progress, cache_import=None) -> None:
        self.store = store
        self.ops = ops
        self.progress = progress
        # --cache-from sources (``builder.cache.importer.CacheImport``), asked on a local miss.
        self.cache_import = cache_import
        # The cache keys of each stage's steps, in order (what --cache-to exports).
        self.keys_by_stage: dict[int, list[str]] = {}
        # key -> (portable step identity, inputs JSON): exported so another machine can say why it missed.
        self.step_inputs: dict[str, tuple[str, dict]] = {}
        self._request: BuildRequest | None = None
        self._inflight: dict[str, Future] = {}
        self._inflight_lock = threading.Lock()
        self._num = 0
        self._num_lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def build(self, req: BuildRequest) -> tuple[StepState, BuildReport, BuildGraph]:
        t0 = time.monotonic()
        self._request = req
        df = req.dockerfile
        report = BuildReport(dockerfile=df.filename, context=req.context_id, target=req.target)
        predefined = self._predefined(req)
        meta = resolve_meta_args(df, req.build_args, predefined)
        env_for_from = {**predefined, **{k: v for k, v in meta.items() if v is not None}}

        def resolve(stage: Stage, instr: Instruction, word: str) -> str:
            from builder.frontend.shell import Lexer

            if instr is stage.from_:
                return expand_from(df, stage, meta, predefined).image
            return Lexer(escape=df.escape).process_word(word, env_for_from)

        graph = build_graph(df, req.target, resolve=resolve)
        order = graph.stages()
        self._step_reports: dict[tuple[int, int, int], StepReport] = {}
        self._missed: dict[tuple[int, int, int], bool] = {}
        self._last_slot: dict[int, tuple[int, int]] = {}
        futures: dict[int, Future] = {}
        used_args: set[str] = set(meta)
        used_lock = threading.Lock()

        def run_stage(stage: Stage) -> StepState:
            deps = graph.deps[stage.index]
            if deps.base_stage is not None:
                futures[deps.base_stage].result()
            scope, state = self._run_stage(req, graph, stage, meta, predefined, futures)
            with used_lock:
                used_args.update(scope.used_args)
            return state

        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max(1, req.jobs), thread_name_prefix="stage") as pool:
            for stage in order:  # file order is a topological order of stages
                futures[stage.index] = pool.submit(run_stage, stage)
            for stage in order:
                try:
                    futures[stage.index].result()
                except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: stop running steps now
                    failure = exc
                    for f in futures.values():
                        f.cancel()
                    cancel = getattr(self.ops, "cancel", None)
                    if cancel is not None:
                        cancel()
                    break
                except BaseException as exc:  # keep the first failure, let the rest finish
                    failure = failure or exc
        report.steps = [self._step_reports[k] for k in sorted(self._step_reports)]
        report.duration_s = time.monotonic() - t0
        for name in unused_build_args(req.build_args, used_args):
            msg = f"build-arg {name} was not consumed by any stage"
            report.warnings.append(msg)
            self.progress.warn(msg)
        if failure is not None:
            report.status = "ERROR"
            self._last_report = report
            raise failure
        return futures[graph.target.index].result(), report, graph

    # ------------------------------------------------------------------ stages

    @staticmethod
    def _predefined(req: BuildRequest) -> dict[str, str]:
        os_, _, rest = req.platform.partition("/")
        arch, _, variant = rest.partition("/")
        values = {"TARGETPLATFORM": req.platform, "TARGETOS": os_, "TARGETARCH": arch,
                  "TARGETVARIANT": variant, "BUILDPLATFORM": req.platform, "BUILDOS": os_,
                  "BUILDARCH": arch, "BUILDVARIANT": variant}
        return {k: v for k, v in values.items() if k in PLATFORM_ARGS}

    def _label(self, stage: Stage, pos: int) -> str:
        total = len(stage.instructions) + 1
        instr = stage.from_ if pos == 0 else stage.instructions[pos - 1]
        return f"[{stage.name or f'stage-{stage.index}'} {pos + 1}/{total}] {_first_line(instr)}"

    def _run_stage(self, req, graph: BuildGraph, stage: Stage, meta, predefined, futures):
        df = req.dockerfile
        no_cache = req.no_cache or (stage.name or str(stage.index)) in req.no_cache_filter
        base = expand_from(df, stage, meta, predefined)
        platform = base.platform or req.platform
        deps = graph.deps[stage.index]
        # FROM: a stage, scratch, or an image.
        t0 = time.monotonic()
        with self._num_lock:
            self._num += 1
            num = self._num
        self.progress.started(num, self._label(stage, 0))
        if deps.base_stage is not None:
            src = futures[deps.base_stage].result()
            inputs = KeyInputs(op="from", instruction=f"FROM stage {src.key}", sources=src.key,
                               platform=platform)
            state = StepState(key=cache_key(inputs), layers=src.layers, config=src.config,
                              history=src.history, platform=platform, base_config=src.base_config)
            status = "CACHED"
        else:
            image_state, digest = self.ops.resolve_base(base.image, platform)
            inputs = KeyInputs(op="from", instruction=f"FROM {base.image}", sources=digest,
                               platform=platform)
            state = StepState(key=cache_key(inputs), layers=image_state.layers, config=image_state.config,
                              history=image_state.history, platform=platform,
                              base_config=image_state.base_config)
            # Like BuildKit: resolving a remote base's manifest and config is not running the step;
            # its layers are lazy (fetched only if a later step runs on them).
            status = "CACHED"
        self.progress.finished(num, status, time.monotonic() - t0)
        self._record_step(req, stage, (0, 0), base, inputs, state.key, status, time.monotonic() - t0, None)

        scope = ExpansionScope(escape=df.escape, env=state.config.env_dict(), build_args=req.build_args,
                               meta_values={**predefined, **meta}, filename=df.filename)
        # The base image's ONBUILD triggers run first, and are not inherited further.
        triggers = state.config.on_build
        if triggers:
            state = dataclasses.replace(state, config=dataclasses.replace(state.config, on_build=()))
            for i, expression in enumerate(triggers, start=1):
                instr = parse_trigger(expression, df, stage.from_.line)
                state = self._step(req, graph, stage, (0, i), scope.expand(instr), state, scope, futures,
                                   no_cache)
                scope.env = state.config.env_dict()
        for pos, instr in enumerate(stage.instructions, start=1):
            for src in deps.reads.get(pos, ()):
                futures[src].result()
            expanded = scope.expand(instr)
            state = self._step(req, graph, stage, (pos, 0), expanded, state, scope, futures, no_cache)
            scope.env = state.config.env_dict()
        return scope, state

    # ------------------------------------------------------------------ steps

    def _step(self, req, graph, stage, slot, instr, parent: StepState, scope, futures, no_cache) -> StepState:
        t0 = time.monotonic()
        pos = slot[0]
        with self._num_lock:
            self._num += 1
            num = self._num
        label = self._label(stage, pos) if slot[1] == 0 else \
            f"[{stage.name or f'stage-{stage.index}'} ONBUILD] {_first_line(instr)}"
        stage_results = {i: f.result() for i, f in futures.items()
                         if i in graph.deps[stage.index].reads.get(pos, ())}
        ctx = StepContext(stage, pos, instr, parent, scope, stage_results, label,
                          log=lambda line: self.progress.log(num, line))
        if isinstance(instr, (CopyInstruction, RunInstruction, WorkdirInstruction)):
            inputs = self.ops.inputs(ctx)
        else:
            inputs = KeyInputs(op="meta", instruction=_canonical(instr), parent=parent.key,
                               args=sorted_pairs({k: v for k, v in scope.args.items() if v is not None})
                               if isinstance(instr, ArgInstruction) else ())
        key = cache_key(inputs)
        self.progress.started(num, label)

        # Identical steps (same key) in parallel stages run once.
        with self._inflight_lock:
            pending = self._inflight.get(key)
            owner = pending is None
            if owner:
                pending = Future()
                self._inflight[key] = pending
        if not owner:
            state = pending.result()
            with self._inflight_lock:
                self.keys_by_stage.setdefault(stage.index, []).append(key)
            self.progress.finished(num, "CACHED", time.monotonic() - t0)
            self._record_step(req, stage, slot, instr, inputs, key, "CACHED", time.monotonic() - t0, None)
            return state
        try:
            try:
                state, status, saved = self._solve_step(ctx, instr, inputs, key, no_cache)
            finally:
                release = getattr(self.ops, "release", None)
                if release is not None:
                    release(ctx)
        except BaseException as exc:
            pending.set_exception(exc)
            with self._inflight_lock:
                self._inflight.pop(key, None)
            duration = time.monotonic() - t0
            message = str(exc)
            self.progress.finished(num, "ERROR", duration, message)
            rep = self._record_step(req, stage, slot, instr, inputs, key, "ERROR", duration, None)
            rep.error = message
            rep.output_tail = list(getattr(exc, "output_tail", []) or [])
            if isinstance(exc, DockerfileError) or not isinstance(exc, Exception):
                raise
            where = f"{req.dockerfile.filename}:{instr.line} {_first_line(instr)}"
            if isinstance(exc, BuildError):
                raise
            if isinstance(exc, PybuildError):
                raise BuildError(f"{where}: {exc}", rep.output_tail, getattr(exc, "hint", None)) from exc
            raise BuildError(f"{where}: {type(exc).__name__}: {exc}", rep.output_tail) from exc
        pending.set_result(state)
        with self._inflight_lock:
            self.keys_by_stage.setdefault(stage.index, []).append(key)
        duration = time.monotonic() - t0
        self.progress.finished(num, status, duration)
        self._record_step(req, stage, slot, instr, inputs, key, status, duration, saved)
        return state

    def _solve_step(self, ctx: StepContext, instr, inputs: KeyInputs, key: str, no_cache: bool):
        linked = inputs.parent is None and inputs.op in ("copy", "add")
        if not no_cache:
            record = self.store.cache_get(key)
            result = record.result if record is not None else None
            if result is None and self.cache_import is not None:
                result = self.cache_import.adopt(self.store, key)
                if result is not None:
                    ctx.log(f"cache record from {result['imported_from']}")
            if result is not None:
                state = StepState.from_json(result["state"])
                if linked:
                    state = rebase(ctx.parent, state, key)
                return state, "CACHED", float(result.get("duration_s", 0.0))
        t0 = time.monotonic()
        if isinstance(instr, (CopyInstruction, RunInstruction, WorkdirInstruction)):
            state = self.ops.execute(ctx, key)
        else:
            parent = ctx.parent
            history = parent.history + (HistoryEntry(created_by(parent.config, instr), empty_layer=True),)
            state = StepState(key=key, layers=parent.layers, config=apply_metadata(parent.config, instr),
                              history=history, platform=parent.platform, base_config=parent.base_config)
        if state.key != key:
            state = StepState(key, state.layers, state.config, state.history, state.platform, state.base_config)
        if state.history and state.history[-1].created is None:
            from builder.image.oci import format_created

            own = dataclasses.replace(state.history[-1], created=format_created(time.time()))
            state = dataclasses.replace(state, history=state.history[:-1] + (own,))
        recorded = inputs.to_json()
        if len(recorded["files"]) > 1000:  # the step: records keep the full map for miss explanations
            recorded["files"] = {}
            recorded["files_omitted"] = len(inputs.files)
        req = self._request
        step = {"dockerfile": self._dockerfile_name(req) if req else None, "context": req.context_id if req else None,
                "stage": ctx.stage.ref, "line": instr.line, "instruction": _first_line(instr)}
        self.store.cache_put(key, {"state": state.to_json(), "duration_s": time.monotonic() - t0,
                                   "step": step, "inputs": recorded}, state.blobs)
        if linked:
            state = rebase(ctx.parent, state, key)
        return state, "DONE", None

    # ------------------------------------------------------------------ report

    def _identity(self, req: BuildRequest, stage: Stage, slot: tuple[int, int]) -> str:
        ident = json.dumps([req.context_id, req.dockerfile.filename, stage.ref, list(slot)])
        return "step:" + hashlib.sha256(ident.encode()).hexdigest()

    @staticmethod
    def _dockerfile_name(req: BuildRequest) -> str:
        """The Dockerfile's path inside the context when it is there (``Dockerfile``), else as given."""
        name = req.dockerfile.filename
        if req.context_id and name.startswith(req.context_id.rstrip("/") + "/"):
            name = name[len(req.context_id.rstrip("/")) + 1:]
        return name

    @classmethod
    def portable_identity(cls, req: BuildRequest, stage: Stage, slot: tuple[int, int]) -> str:
        """The step's identity across machines (exported with the cache): the Dockerfile's path
        inside the context, the stage and the position — not where the checkout lives."""
        ident = json.dumps([cls._dockerfile_name(req), stage.ref, list(slot)])
        return "step:" + hashlib.sha256(ident.encode()).hexdigest()

    def _record_step(self, req, stage, slot, instr, inputs: KeyInputs, key, status, duration, saved) -> StepReport:
        ident = self._identity(req, stage, slot)
        portable = self.portable_identity(req, stage, slot)
        prev_slot = self._last_slot.get(stage.index)
        reason: MissReason | None = None
        if status in ("DONE", "ERROR"):
            previous = None
            rec = self.store.index.cache_get(ident, touch=False) if hasattr(self.store, "index") else None
            recorded = rec.result.get("inputs") if rec is not None else None
            if recorded is None and self.cache_import is not None:
                # A fresh CI machine: compare with the build that exported the imported cache.
                recorded = self.cache_import.previous_inputs(portable)
            if recorded is not None:
                try:
                    previous = KeyInputs.from_json(recorded)
                except (KeyError, TypeError, ValueError, AttributeError):
                    previous = None
            prev = (stage.index, *prev_slot) if prev_slot is not None else None
            parent_missed = self._missed.get(prev, False) if prev else False
            parent_rep = self._step_reports.get(prev) if prev else None
            parent_name = f"{req.dockerfile.filename}:{parent_rep.line} {parent_rep.instruction}" \
                if parent_rep else None
            if req.no_cache:
                reason = MissReason("no_cache", "--no-cache was given")
            elif (stage.name or str(stage.index)) in req.no_cache_filter:
                reason = MissReason("no_cache", f"--no-cache-filter names stage {stage.ref}")
            else:
                reason = explain_miss(inputs, previous, parent_step=parent_name, parent_missed=parent_missed)
        self._missed[(stage.index, *slot)] = status in ("DONE", "ERROR")
        self._last_slot[stage.index] = slot
        if status != "ERROR":
            self.store.index.cache_put(ident, {"inputs": inputs.to_json(), "key": key}, [])
            with self._inflight_lock:
                self.step_inputs[key] = (portable, inputs.to_json())
        rep = StepReport(stage=stage.ref, line=instr.line, instruction=_first_line(instr), status=status,
                         duration_s=duration, cache_key=key, miss_reason=reason, saved_s=saved)
        self._step_reports[(stage.index, *slot)] = rep
        return rep
