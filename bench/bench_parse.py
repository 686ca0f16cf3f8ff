#!/usr/bin/env python3
"""Frontend speed: parse + type + expand Dockerfiles, beside BuildKit's own parser.

Figures printed:
* mean time per Dockerfile over the BuildKit testfiles corpus (parse + expand);
* a typical 30-line Dockerfile (fixtures/bench/Dockerfile.30), mean per parse;
* growth from 500 to 5,000 lines (should be linear: ratio ~10);
* process start-up for `pybuild parse` (the grammar must not be rebuilt each run);
* the same raw parse with the `dockerfile` package (BuildKit v0.12.5 in Go) when installed.

Usage: python3 bench/bench_parse.py [--repeat N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.frontend import (  # noqa: E402
    DockerfileError, ExpansionScope, expand_from, parse, parse_dockerfile, resolve_meta_args,
)

sys.path.insert(0, str(REPO))
from tests.conftest import locate_corpus  # noqa: E402  (../shared, $PYBUILD_BUILDKIT_CORPUS, or beside the origin)

CORPUS = locate_corpus() / "parser" / "testfiles"


def full(text: bytes | str) -> None:
    try:
        df = parse(text)
    except DockerfileError:
        return  # corpus files written for the raw parser (e.g. unknown flags) stop here
    meta = resolve_meta_args(df, {})
    for stage in df.stages:
        try:
            expand_from(df, stage, meta)
        except DockerfileError:
            pass
        scope = ExpansionScope(escape=df.escape, meta_values=meta)
        for instr in stage.instructions:
            try:
                scope.expand(instr)
            except DockerfileError:
                pass  # a few corpus files hold words that only a build would reject


def per_call(fn, arg, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def synthetic(lines: int) -> str:
    body = []
    block = ["RUN apt-get update && apt-get install -y curl \\", "    && rm -rf /var/lib/apt/lists/*",
             "ENV PATH=/opt/app/bin:$PATH VERSION=${VERSION:-1.0}", "COPY --chown=app:app src/ /opt/app/src/",
             "LABEL org.example.v=\"$VERSION\"", "WORKDIR /opt/app/$VERSION", "ARG EXTRA=1",
             "EXPOSE 8080/tcp", "USER app"]
    while len(body) < lines:
        body.extend(block)
    return "ARG VERSION=2\nFROM busybox:$VERSION AS base\n" + "\n".join(body[:lines]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=50)
    opts = ap.parse_args()

    files = [(p.name, (p / "Dockerfile").read_bytes()) for p in sorted(CORPUS.iterdir())]
    full(files[0][1])  # warm the parser (grammar tables are cached on disk)

    corpus_times = [per_call(full, data, opts.repeat) for _, data in files]
    print(f"corpus: {len(files)} Dockerfiles, parse+expand mean {statistics.mean(corpus_times) * 1e3:.3f} ms, "
          f"max {max(corpus_times) * 1e3:.3f} ms")

    thirty = (REPO / "fixtures" / "bench" / "Dockerfile.30").read_text()
    t30 = per_call(full, thirty, opts.repeat * 4)
    print(f"typical 30-line Dockerfile: parse+expand {t30 * 1e3:.3f} ms (goal < 2 ms)")

    t500 = per_call(full, synthetic(500), 10)
    t5000 = per_call(full, synthetic(5000), 5)
    print(f"500 lines {t500 * 1e3:.1f} ms, 5,000 lines {t5000 * 1e3:.1f} ms, ratio {t5000 / t500:.1f} "
          "(linear = 10)")

    try:
        import dockerfile  # BuildKit v0.12.5's Go parser
    except ImportError:
        print("dockerfile package not installed: no BuildKit comparison")
    else:
        ours_raw = statistics.mean(per_call(parse_dockerfile, d, opts.repeat) for _, d in files)
        texts = [d.decode() for _, d in files]
        theirs = statistics.mean(per_call(dockerfile.parse_string, t, opts.repeat) for t in texts)
        print(f"raw parse of the corpus: pybuild {ours_raw * 1e3:.3f} ms, BuildKit (Go, via cgo) "
              f"{theirs * 1e3:.3f} ms, ratio {ours_raw / theirs:.1f}x")

    cmd = [sys.executable, "-m", "builder", "parse", "-f", str(REPO / "fixtures" / "bench" / "Dockerfile.30")]
    runs = []
    for _ in range(10):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - t)
    base = []
    for _ in range(10):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t)
    print(f"`pybuild parse` process: median {statistics.median(runs) * 1e3:.0f} ms "
          f"(bare python start-up {statistics.median(base) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
