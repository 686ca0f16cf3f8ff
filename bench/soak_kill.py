"""Soak: build, SIGKILL, check, rebuild — for N minutes; count builds per hour and store corruptions.

    python3 bench/soak_kill.py --minutes 30 [--seed 1] [--json out.json]

Each round picks a kill category at random — RUN, compression, store commit, push (to a real
``docker-registry`` through a slowed proxy), or a random time into any of those builds — starts a
real ``pybuild build``, kills it with SIGKILL at the watched point (``tests/hardening/crashkit``),
then verifies: no process or mount of the build left, ``pybuild system check`` clean, and a
rebuild succeeds with the finished steps CACHED (pushes: the registry serves the rebuilt image).

Printed (and written with ``--json``): builds per hour (killed builds and rebuilds both count),
kills per category and how many landed in it, store corruptions (``system check`` failures after
a kill — must be 0), leaks and failed rebuilds. A corrupted store is repaired with ``system check
--repair`` and the soak goes on; the exit status is 1 if anything failed.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "registry"))

from fault_proxy import FaultProxy  # noqa: E402
from servers import RegistryServer  # noqa: E402
from tests.hardening.conftest import run_pybuild  # noqa: E402
from tests.hardening.crashkit import (  # noqa: E402
    AfterKillFailure, CommitScenario, CompressScenario, CrashContext, PushScenario, RandomTimeScenario,
    RunScenario, kill_once,
)
from tests.store.conftest import load_make_busybox  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to soak (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    ap.add_argument("--workdir", default=None, help="keep stores here (default: a temp dir, removed)")
    args = ap.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pybuild-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    archive = work / "busybox.tar"
    if load_make_busybox().main(["-o", str(archive)]) != 0:
        print("cannot make the busybox image", file=sys.stderr)
        return 2
    registry = RegistryServer(work / "registry").start()

    def slow_blobs(method: str, path: str, n: int):
        if "/blobs/" in path and method != "GET":
            time.sleep(0.03)
        return None

    proxy = FaultProxy(registry.host, slow_blobs)
    proxy._server.handle_error = lambda request, address: None   # a killed client's broken pipe is expected
    rng = random.Random(args.seed)
    scenarios = {"RUN": RunScenario(), "compression": CompressScenario(), "store commit": CommitScenario(),
                 "push": PushScenario()}
    contexts = {}
    for name, scenario in scenarios.items():
        base = work / name.replace(" ", "-")
        push = name == "push"
        ctx = CrashContext.create(base, scenario, f"{proxy.host}/soak/app" if push else "soak/app",
                                  proxy if push else None)
        run_pybuild("load", "-i", archive, root=ctx.root, check=True)
        contexts[name] = ctx
    kills, hits, failures = Counter(), Counter(), Counter()
    details: list[str] = []
    builds = 0
    start = time.monotonic()
    deadline = start + args.minutes * 60
    index = 0
    try:
        while time.monotonic() < deadline:
            index += 1
            name = rng.choice(list(scenarios))
            scenario = scenarios[name]
            label = name
            if rng.random() < 0.25:
                scenario = RandomTimeScenario(scenario, longest=1.2)
                label = "random time"
            kills[label] += 1
            builds += 1
            try:
                result = kill_once(scenario, contexts[name], rng, index)
                builds += 1
                hits[label] += bool(result.hit)
            except AfterKillFailure as exc:
                failures[exc.kind] += 1
                details.append(f"#{index} {label}: {exc}")
                print(f"FAILED #{index} {label} ({exc.kind}): {exc}", file=sys.stderr, flush=True)
                if exc.kind == "corruption":
                    run_pybuild("system", "check", "--repair", root=contexts[name].root)
            if index % 10 == 0:
                print(f"{index} kills, {builds} builds, {time.monotonic() - start:.0f}s, "
                      f"corruptions {failures['corruption']}", flush=True)
    finally:
        proxy.stop()
        registry.stop()
    hours = (time.monotonic() - start) / 3600
    summary = {
        "minutes": round(hours * 60, 1), "seed": args.seed, "kills": sum(kills.values()),
        "builds": builds, "builds_per_hour": round(builds / hours) if hours else 0,
        "kills_per_category": dict(kills), "landed_in_category": dict(hits),
        "corruptions": failures["corruption"], "leaks": failures["leak"], "failed_rebuilds": failures["rebuild"],
        "failures": details,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if not args.workdir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if sum(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
