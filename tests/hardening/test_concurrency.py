"""Four overlapping builds at once on one store while ``system prune`` (then ``prune -a``) runs.

A fifth build makes an image without a name, which a prune may remove as soon as it is stored.
Every build succeeds, every image is bit-for-bit the one the same builds make one after another
on a fresh store (``SOURCE_DATE_EPOCH`` makes builds reproducible), and ``system check`` finds
the shared store consistent afterwards. Round 1 prunes unnamed images and unreferenced content
meanwhile; round 2 also drops the whole build cache meanwhile (``-a``), so builds that start
after it rebuild steps others had cached, and one build's cache vanishing under another must not
break it.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from tests.hardening.conftest import assert_store_clean, cli_env, pybuild_cmd, run_pybuild
from tests.store.conftest import busybox_archive  # noqa: F401

from builder.store.store import ContentStore

# Overlapping on purpose: the same first RUN everywhere, A's steps a prefix of C's, D copies from a stage.
DOCKERFILES = {
    "a": "FROM busybox\nARG R\nRUN echo common $R > /common\nRUN echo a $R > /a && mkdir -p /d && echo 1 > /d/1\n",
    "b": "FROM busybox\nARG R\nRUN echo common $R > /common\nCOPY f.txt /f.txt\nRUN rm /common && echo b > /b\n",
    "c": "FROM busybox\nARG R\nRUN echo common $R > /common\nRUN echo a $R > /a && mkdir -p /d && echo 1 > /d/1\n"
         "RUN rm -r /d && echo c > /c\n",
    "d": "FROM busybox AS x\nARG R\nRUN echo common $R > /common\nRUN echo x > /x\n"
         "FROM busybox\nCOPY --from=x /common /x /\nRUN echo d > /d\n",
}


def _contexts(base: Path) -> dict[str, Path]:
    out = {}
    for name, text in DOCKERFILES.items():
        ctx = base / f"ctx-{name}"
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "Dockerfile").write_text(text)
        (ctx / "f.txt").write_text("a file from the context\n")
        out[name] = ctx
    out["unnamed"] = out["c"]
    return out


def _build_args(name: str, ctx: Path, rnd: int) -> list[str]:
    if name == "unnamed":   # an image without a name: the first thing a concurrent prune removes
        return ["build", "-q", "--progress", "quiet", "--build-arg", f"R={rnd}-unnamed", str(ctx)]
    return ["build", "-q", "--progress", "quiet", "-t", f"conc/{name}:{rnd}", "--build-arg", f"R={rnd}", str(ctx)]


def _manifest_digests(root: Path, names: list[str]) -> dict[str, str]:
    with ContentStore(root) as store:
        return {n: store.resolve(n) for n in names}


def test_four_builds_and_prunes_at_once_match_serial_builds(tmp_path, busybox_archive):  # noqa: F811
    contexts = _contexts(tmp_path)
    shared, serial = tmp_path / "shared", tmp_path / "serial"
    for root in (shared, serial):
        run_pybuild("load", "-i", busybox_archive, root=root, check=True)

    concurrent_ids: dict[str, str] = {}
    prunes_run = {"prune": 0, "prune -a": 0}
    for rnd, prune_args in ((1, ["system", "prune"]), (2, ["system", "prune", "-a"])):
        stop = threading.Event()
        failures: list[str] = []
        pruned: list[str] = []

        def pruner() -> None:
            # Keep pruning for as long as the builds run (each prune waits for running builds'
            # leases, so they interleave with builds starting and finishing).
            while True:   # the last prune starts after the builds have ended
                last = stop.is_set()
                result = run_pybuild(*prune_args, root=shared)
                if result.returncode != 0:
                    failures.append(result.stderr)
                pruned.extend(line for line in result.stdout.splitlines() if line.startswith("Deleted"))
                prunes_run[" ".join(prune_args[1:])] += 1
                if last:
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=pruner)
        thread.start()
        procs = {}
        try:
            for name, ctx in contexts.items():   # staggered, so prunes fall between builds too
                procs[name] = subprocess.Popen(pybuild_cmd("--root", shared, *_build_args(name, ctx, rnd)),
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                               env=cli_env())
                time.sleep(0.2)
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, f"concurrent build {name} (round {rnd}) failed:\n{err}"
                concurrent_ids[f"{name}:{rnd}"] = out.strip().splitlines()[-1]
        finally:
            stop.set()
            thread.join(120)
        assert not failures, failures
        print(f"round {rnd}: {' '.join(prune_args)} x{prunes_run[' '.join(prune_args[1:])]}, {len(pruned)} deletions")
        if rnd == 1:   # the unnamed image (or another build's unreferenced content) went meanwhile
            assert any(line.startswith(("Deleted image", "Deleted blob")) for line in pruned), pruned
        if rnd == 2:   # round 1's build cache was there to drop while round 2 built
            assert any(line.startswith("Deleted build cache entries") for line in pruned), pruned
        assert_store_clean(shared)

    assert prunes_run["prune"] >= 1 and prunes_run["prune -a"] >= 1
    serial_ids = {}
    for rnd in (1, 2):
        for name, ctx in contexts.items():
            result = run_pybuild(*_build_args(name, ctx, rnd), root=serial, check=True)
            serial_ids[f"{name}:{rnd}"] = result.stdout.strip().splitlines()[-1]
    assert concurrent_ids == serial_ids
    names = [f"conc/{key}" for key in sorted(serial_ids) if not key.startswith("unnamed")]
    assert _manifest_digests(shared, names) == _manifest_digests(serial, names)
    assert_store_clean(shared)
    assert_store_clean(serial)
