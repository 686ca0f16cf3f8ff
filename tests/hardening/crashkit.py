"""Kill a real ``pybuild build`` with SIGKILL at chosen points, then prove nothing was damaged.

Used by ``tests/hardening/test_crashes.py`` (a fixed number of kills) and ``bench/soak_kill.py``
(as many as fit in N minutes).

A kill point is chosen by *watching* the build, not by guessing a time: its ``--progress json``
events (a RUN step's output line), files appearing in the store (a layer's temp blob growing in
``tmp/``, a new blob published in ``blobs/``) and requests reaching the registry (through a
proxy). After the kill, ``classify`` looks at what is on disk and in the proxy's log to say which
phase the build was really in, so a kill that landed elsewhere is not counted as a hit.

After every kill, ``verify_after_kill`` checks: no process of the build is left, ``pybuild
system check`` passes (opening the store runs the usual start-up cleanup), no mount of the
killed build is left, and a rebuild succeeds with every step the killed build had finished
reported CACHED (and, for a push, the registry then serves exactly the image built).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.hardening.conftest import cli_env, pybuild_cmd, run_pybuild

POLL = 0.002


class AfterKillFailure(AssertionError):
    """What a kill broke: ``kind`` is ``leak`` (a process or mount left), ``corruption``
    (``system check`` failed) or ``rebuild`` (the rebuild failed or did not reuse finished steps)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WatchedBuild:
    """``pybuild build --progress json`` as a subprocess whose events are read as they come."""

    def __init__(self, root: Path, args: list[str], env: dict[str, str]) -> None:
        self.root = root
        self.args = args
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(pybuild_cmd("--root", root, "build", "--progress", "json", *args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.stderr.append(line)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Poll ``predicate`` until it holds (True) or the build has ended (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.proc.poll() is not None:
                self._reader.join(5)
                return predicate()
            time.sleep(POLL)
        return False

    def kill(self) -> bool:
        """SIGKILL the build; False when it had already exited."""
        alive = self.proc.poll() is None
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(5)
        return alive and self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 120.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    # -- what the events say

    def labels(self) -> dict[int, str]:
        return {e["step"]: e["label"] for e in self.events if e.get("event") == "step_started"}

    def finished(self) -> dict[str, str]:
        """Label -> status of every step that finished (DONE or CACHED)."""
        labels = self.labels()
        return {labels[e["step"]]: e["status"] for e in self.events
                if e.get("event") == "step_finished" and e.get("status") != "ERROR"}

    def logged(self, text: str) -> bool:
        return any(e.get("event") == "step_log" and e.get("line") == text for e in list(self.events))

    def steps_done(self) -> int:
        return len([e for e in list(self.events) if e.get("event") == "step_finished"])


# ---------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """One category of kill: the Dockerfile, how to pick the moment, how to prove where it landed."""

    name: str
    dockerfile: str
    steps: int                                   # steps in the Dockerfile (FROM included)

    def arm(self, build: WatchedBuild, rng: random.Random, ctx: "CrashContext") -> Callable[[], bool]:
        raise NotImplementedError

    def classify(self, build: WatchedBuild, ctx: "CrashContext", before: "StoreSnapshot") -> str | None:
        """Why this kill counts as a hit of the category (None: it landed elsewhere)."""
        raise NotImplementedError


@dataclass
class StoreSnapshot:
    """What the store held just before the build started (to tell new files from old ones)."""

    blobs: set[str]

    @classmethod
    def take(cls, root: Path) -> "StoreSnapshot":
        return cls(set(_names(root / "blobs" / "sha256")))


@dataclass
class CrashContext:
    """One store and build context that a scenario's builds (and kills) use in turn."""

    root: Path
    context_dir: Path
    repository: str                               # images are tagged REPOSITORY:cN
    registry: "object | None" = None              # a FaultProxy in front of a docker-registry: push
    token: str = ""                               # in the build's (and its RUN processes') environment
    image_name: str = ""
    notes: dict = field(default_factory=dict)

    @classmethod
    def create(cls, base: Path, scenario: Scenario, repository: str, registry=None) -> "CrashContext":
        ctx_dir = base / "ctx"
        ctx_dir.mkdir(parents=True, exist_ok=True)
        (ctx_dir / "Dockerfile").write_text(scenario.dockerfile)
        (base / "docker-config").mkdir(exist_ok=True)
        return cls(base / "root", ctx_dir, repository, registry)


class RunScenario(Scenario):
    """Killed while a RUN step's process runs (its output has started, the step has not finished)."""

    def __init__(self) -> None:
        super().__init__("RUN", (
            "FROM busybox\n"
            "RUN echo base > /base\n"
            "ARG TOKEN\n"
            "RUN i=1; while [ $i -le 6 ]; do echo tick $i; sleep 0.03; i=$((i+1)); done; echo $TOKEN > /run\n"
        ), steps=4)

    def arm(self, build, rng, ctx):
        tick = f"tick {rng.randint(1, 6)}"
        return lambda: build.logged(tick)

    def classify(self, build, ctx, before):
        running = [label for label in build.labels().values() if "tick" in label]
        if running and running[0] not in build.finished() and build.logged("tick 1"):
            return "the RUN step had printed output and not finished"
        return None


class CompressScenario(Scenario):
    """Killed while a big layer is being tarred and compressed into a temp blob."""

    def __init__(self, megabytes: int = 16) -> None:
        self.megabytes = megabytes
        super().__init__("compression", (
            "FROM busybox\n"
            "RUN echo base > /base\n"
            "ARG TOKEN\n"
            f"RUN dd if=/dev/urandom of=/big bs=1M count={megabytes} 2>/dev/null; echo $TOKEN > /t\n"
        ), steps=4)

    def arm(self, build, rng, ctx):
        threshold = rng.randint(1, self.megabytes << 19)   # somewhere in the first half of the blob
        return lambda: _temp_blob_size(ctx.root) >= threshold

    def classify(self, build, ctx, before):
        size = _temp_blob_size(ctx.root)
        new_big = [d for d in _names(ctx.root / "blobs" / "sha256") if d not in before.blobs
                   and (ctx.root / "blobs" / "sha256" / d).stat().st_size > (1 << 20)]
        if size > 0 and not new_big:
            ctx.notes["temp_bytes"] = size
            return f"a {size}-byte temp blob was being written and no layer blob was published"
        return None


class CommitScenario(Scenario):
    """Killed while the store commits: a layer blob just published but its step not recorded
    (snapshot adoption, layer and cache rows), or the last step done but the image not yet tagged."""

    def __init__(self) -> None:
        super().__init__("store commit", (
            "FROM busybox\n"
            "RUN echo base > /base\n"
            "ARG TOKEN\n"
            "RUN mkdir /many && i=0; while [ $i -lt 600 ]; do echo $TOKEN$i > /many/f$i; i=$((i+1)); done\n"
            "RUN echo $TOKEN > /last\n"
        ), steps=5)

    def arm(self, build, rng, ctx):
        if rng.random() < 0.5:
            ctx.notes["mode"] = "blob"
            before = set(_names(ctx.root / "blobs" / "sha256"))
            return lambda: bool(set(_names(ctx.root / "blobs" / "sha256")) - before)
        ctx.notes["mode"] = "export"
        delay = rng.uniform(0, 0.006)
        state = {}

        def after_last_step() -> bool:
            if build.steps_done() < self.steps:
                return False
            state.setdefault("t", time.monotonic())
            return time.monotonic() - state["t"] >= delay
        return after_last_step

    def classify(self, build, ctx, before):
        new = [d for d in _names(ctx.root / "blobs" / "sha256") if d not in before.blobs]
        tagged = _ref_exists(ctx.root, ctx.image_name)
        if ctx.notes.get("mode") == "blob" and new and build.steps_done() < self.steps:
            return f"{len(new)} new blob(s) published, step {build.steps_done() + 1} not recorded finished"
        if build.steps_done() >= self.steps and not tagged:
            return "every step finished, the image not yet stored and tagged"
        return None


class PushScenario(Scenario):
    """Killed while the built image is pushed to a real registry (uploads started, manifest not PUT)."""

    def __init__(self) -> None:
        super().__init__("push", (
            "FROM busybox\n"
            "ARG TOKEN\n"
            "RUN dd if=/dev/urandom of=/big bs=1k count=1536 2>/dev/null; echo $TOKEN > /t\n"
        ), steps=3)

    def arm(self, build, rng, ctx):
        proxy = ctx.registry
        start = len(proxy.log)
        wanted = rng.choice(["HEAD", "POST", "PATCH", "PUT"])

        def seen() -> bool:
            for method, path, _fault, _headers in proxy.log[start:]:
                if method == wanted and "/blobs/" in path:
                    return True
            return False
        ctx.notes["start"] = start
        return seen

    def classify(self, build, ctx, before):
        requests = ctx.registry.log[ctx.notes["start"]:]
        uploads = [m for m, p, _, _ in requests if "/blobs/" in p]
        manifest_put = [p for m, p, _, _ in requests if m == "PUT" and "/manifests/" in p]
        if uploads and not manifest_put:
            return f"{len(uploads)} blob requests reached the registry, the manifest was never PUT"
        return None


class RandomTimeScenario(Scenario):
    """Killed after a random time (the soak's way to reach windows nobody thought of)."""

    def __init__(self, base: Scenario, longest: float = 2.5) -> None:
        super().__init__(f"random time ({base.name})", base.dockerfile, base.steps)
        self.longest = longest

    def arm(self, build, rng, ctx):
        deadline = time.monotonic() + rng.uniform(0.0, self.longest)
        return lambda: time.monotonic() >= deadline

    def classify(self, build, ctx, before):
        return f"after {build.steps_done()} finished step events"


# ---------------------------------------------------------------- one kill, verified


@dataclass
class KillResult:
    scenario: str
    hit: str | None            # why it counts (None: landed elsewhere, not counted)
    finished_before: dict[str, str]
    check_output: str = ""
    rebuild_cached: list[str] = field(default_factory=list)
    cgroups_left: int = 0      # RUN-step cgroups the kill left (the next container start removes them)


def kill_once(scenario: Scenario, ctx: CrashContext, rng: random.Random, index: int) -> KillResult:
    """Start the build, kill it at the armed moment, classify, then verify the aftermath."""
    from builder.store.names import normalize_name

    ctx.token = f"crashtok-{os.getpid()}-{index}-{rng.randrange(1 << 30)}"
    tag = f"{ctx.repository}:c{index}"
    ctx.image_name = normalize_name(tag)
    ctx.notes = {}
    args = ["--build-arg", f"TOKEN={ctx.token}", "-t", tag, *(["--push"] if ctx.registry else []),
            str(ctx.context_dir)]
    before = StoreSnapshot.take(ctx.root)
    env = _env(ctx)
    build = WatchedBuild(ctx.root, args, env)
    trigger = scenario.arm(build, rng, ctx)
    build.wait_until(trigger)
    killed = build.kill()
    hit = scenario.classify(build, ctx, before) if killed else None
    result = KillResult(scenario.name, hit, build.finished())
    verify_after_kill(ctx, build, result, args, env)
    return result


def verify_after_kill(ctx: CrashContext, build: WatchedBuild, result: KillResult, args: list[str],
                      env: dict[str, str]) -> None:
    leaked = _wait_no_process_with(ctx.token)
    if leaked:
        raise AfterKillFailure("leak", f"{result.scenario}: processes of the killed build still run: {leaked}")
    check = run_pybuild("system", "check", root=ctx.root, env=env)
    result.check_output = check.stdout + check.stderr
    if check.returncode != 0:
        raise AfterKillFailure("corruption", f"{result.scenario}: system check after the kill:\n{result.check_output}")
    mounts = _mounts_under(ctx.root)
    if mounts:
        raise AfterKillFailure("leak", f"{result.scenario}: mounts of the killed build remain: {mounts}")
    result.cgroups_left = len(_cgroups_of(build.proc.pid))
    rebuild = WatchedBuild(ctx.root, args, env)
    code = rebuild.finish()
    if code != 0:
        raise AfterKillFailure("rebuild", f"{result.scenario}: rebuild failed ({code}): "
                                          f"{''.join(rebuild.stderr)[-2000:]}")
    after = rebuild.finished()
    for label in result.finished_before:
        if after.get(label) != "CACHED":
            raise AfterKillFailure("rebuild", f"{result.scenario}: step {label!r} finished before the kill "
                                              f"but was {after.get(label)} on rebuild")
    result.rebuild_cached = [label for label, status in after.items() if status == "CACHED"]
    if any(" RUN " in label and status == "DONE" for label, status in after.items()):
        # The rebuild started a container: by then the killed build's step cgroups are gone.
        left = _cgroups_of(build.proc.pid)
        if left:
            raise AfterKillFailure("leak", f"{result.scenario}: cgroups of the killed build remain: {left}")
    if ctx.registry is not None:
        try:
            _assert_registry_has(ctx)
        except AssertionError as exc:
            raise AfterKillFailure("rebuild", f"{result.scenario}: after the rebuild's push: {exc}") from None


# ---------------------------------------------------------------- helpers


def _env(ctx: CrashContext) -> dict[str, str]:
    env = cli_env()
    env["DOCKER_CONFIG"] = str(ctx.root.parent / "docker-config")
    return env


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _temp_blob_size(root: Path) -> int:
    """Bytes of the biggest ``blob-*`` temp file in any scratch directory under ``root/tmp``."""
    best = 0
    tmp = root / "tmp"
    for d in _names(tmp):
        for name in _names(tmp / d):
            if name.startswith("blob-"):
                try:
                    best = max(best, (tmp / d / name).stat().st_size)
                except FileNotFoundError:
                    pass
    return best


def _ref_exists(root: Path, name: str) -> bool:
    db = sqlite3.connect(f"file:{root / 'index.db'}?mode=ro", uri=True)
    try:
        return bool(db.execute("SELECT 1 FROM refs WHERE name = ?", (name,)).fetchall())
    finally:
        db.close()


def _processes_with(token: str) -> list[str]:
    needle = token.encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle in fh.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _wait_no_process_with(token: str, timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = _processes_with(token)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _cgroups_of(pid: int) -> list[str]:
    """The RUN-step cgroups (``pybuild-run-PID-*``) of build ``pid`` beside this process's own."""
    from builder.runtime import cgroups

    own = cgroups._own_paths()
    found = []
    for h in cgroups.hierarchies():
        key = "" if h.unified else next(iter(h.controllers), "")
        base = own.get(key, "/")
        rel = base[len(h.root):] if h.root != "/" and base.startswith(h.root) else base
        parent = h.mount_point + rel.rstrip("/")
        try:
            names = os.listdir(parent or "/")
        except OSError:
            continue
        found += [f"{parent}/{n}" for n in names if n.startswith(f"pybuild-run-{pid}-")]
    return found


def _mounts_under(root: Path) -> list[str]:
    prefix = os.path.realpath(root) + "/"
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(prefix)]


def _assert_registry_has(ctx: CrashContext) -> None:
    """The registry serves, under the pushed tag, exactly the manifest the store holds."""
    import requests

    from builder.store.store import ContentStore

    with ContentStore(ctx.root) as store:
        digest = store.resolve(ctx.image_name)
        manifest = store.read_blob(digest)
    host, _, rest = ctx.image_name.partition("/")
    repo, _, tag = rest.rpartition(":")
    upstream = ctx.registry.upstream
    resp = requests.get(f"http://{upstream}/v2/{repo}/manifests/{tag}", timeout=10, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code == 200, f"registry has no {ctx.image_name}: {resp.status_code}"
    assert resp.headers.get("Docker-Content-Digest") == digest and resp.content == manifest
    for layer in json.loads(manifest)["layers"]:
        head = requests.head(f"http://{upstream}/v2/{repo}/blobs/{layer['digest']}", timeout=10)
        assert head.status_code == 200, f"registry lacks layer {layer['digest']}"
