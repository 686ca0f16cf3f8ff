#!/usr/bin/env python3
"""Fuzz the whole Dockerfile frontend for a fixed time; report inputs run and findings.

The target is the pipeline of ``pybuild parse --build-arg`` and a build's frontend
(``tests/hardening/test_hostile_dockerfiles.pipeline``: parse, BuildKit dump, stages, global
ARGs, every FROM, ARG/ENV expansion of every instruction with build args, JSON). A finding
is any exception other than ``DockerfileError``, a ``DockerfileError`` without a line or
with a multi-line message, or one input taking longer than ``--slow`` seconds.

Engines:
* ``atheris`` (coverage-guided libFuzzer; ``pip install atheris``): inputs are raw bytes,
  split into a Dockerfile and build args; seeded with BuildKit's parser testfiles and the
  hypothesis generator's output. Crashing inputs are written to ``--out``.
* ``hypothesis`` (no extra package): the grammar-aware generator of the hardening test,
  run for the time given, examples not shrunk unless something fails.

Usage: python3 bench/fuzz_frontend.py [--minutes N] [--engine atheris|hypothesis] [--out DIR]
Prints one JSON line: engine, seconds, inputs run, inputs/s, findings (with their input).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO))
from tests.conftest import locate_corpus  # noqa: E402  (../shared, $PYBUILD_BUILDKIT_CORPUS, or beside the origin)

CORPUS = locate_corpus() / "parser" / "testfiles"
ARG_NAMES = ["A", "B", "a_1", "PATH", "TARGETARCH", "HTTP_PROXY", "é", "X9"]


class Finding(Exception):
    """The frontend misbehaved on one input."""


def make_target(slow: float):
    from builder.frontend import DockerfileError
    from tests.hardening.test_hostile_dockerfiles import pipeline

    def target(data: bytes, args: dict[str, str], stage: str | None) -> None:
        start = time.process_time()
        try:
            pipeline(data, args, stage)
        except DockerfileError as exc:  # raised by pipeline's own checks only through AssertionError
            raise Finding(f"unchecked DockerfileError: {exc}") from exc
        except AssertionError as exc:
            raise Finding(f"bad error: {exc}") from exc
        except RecursionError as exc:
            raise Finding("RecursionError") from exc
        except Exception as exc:
            raise Finding(f"{type(exc).__name__}: {exc}") from exc
        spent = time.process_time() - start
        if spent > slow:
            raise Finding(f"slow: {spent:.2f}s for {len(data)} bytes")

    return target


def split_input(raw: bytes) -> tuple[bytes, dict[str, str], str | None]:
    """Raw fuzzer bytes -> (Dockerfile, build args, target): the bytes after the last
    ``\\x00ARGS\\x00`` marker are ``NAME=value`` lines."""
    data, sep, tail = raw.rpartition(b"\x00ARGS\x00")
    if not sep:
        return raw, {}, None
    args: dict[str, str] = {}
    stage = None
    for line in tail.decode("utf-8", "surrogateescape").splitlines()[:8]:
        name, _, value = line.partition("=")
        if name == "--target":
            stage = value or None
        elif name:
            args[name[:40]] = value[:200]
    return data, args, stage


def seeds() -> list[bytes]:
    out = []
    if CORPUS.is_dir():
        for case in sorted(CORPUS.iterdir()):
            path = case / "Dockerfile"
            if path.is_file():
                out.append(path.read_bytes() + b"\x00ARGS\x00A=1\nB=${A}\n")
    from hypothesis import HealthCheck, given, settings

    from tests.hardening.test_hostile_dockerfiles import build_args, dockerfile

    @settings(max_examples=200, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(dockerfile(), build_args)
    def collect(data, args):
        out.append(data + b"\x00ARGS\x00" + "\n".join(f"{k}={v}" for k, v in args.items())
                   .encode("utf-8", "surrogateescape"))

    collect()
    return out


def run_atheris(seconds: int, slow: float, out_dir: Path) -> dict:
    import atheris

    with atheris.instrument_imports(include=["builder.frontend"]):
        import builder.frontend.lexer  # noqa: F401
        import builder.frontend.parser  # noqa: F401
        import builder.frontend.shell  # noqa: F401
        import builder.frontend.stages  # noqa: F401
    target = make_target(slow)
    corpus = out_dir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i:04}").write_bytes(seed)
    state = {"runs": 0, "start": time.monotonic(), "findings": []}

    deadline = state["start"] + seconds

    def one(raw: bytes) -> None:
        if time.monotonic() > deadline:
            # libFuzzer's own time limit ends the process without running atexit handlers.
            report()
            sys.stdout.flush()
            os._exit(1 if state["findings"] else 0)
        state["runs"] += 1
        data, args, stage = split_input(raw)
        try:
            target(data, args, stage)
        except Finding as exc:
            # Recorded and saved, and fuzzing goes on (libFuzzer would stop at the first crash).
            n = len(state["findings"])
            (out_dir / f"finding-{n:03}").write_bytes(raw)
            state["findings"].append({"error": str(exc)[:300], "input": raw[:2000].decode("utf-8", "backslashreplace")})

    def report() -> None:
        took = time.monotonic() - state["start"]
        print(json.dumps({"engine": "atheris", "seconds": round(took, 1), "inputs": state["runs"],
                          "per_second": round(state["runs"] / max(took, 1e-9)),
                          "findings": state["findings"]}, ensure_ascii=False))

    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds + 60}", "-timeout=30", "-rss_limit_mb=4096",
            f"-artifact_prefix={out_dir}/", "-print_final_stats=1", "-max_len=65536"]
    atheris.Setup(argv, one)
    atheris.Fuzz()
    return {}


def run_hypothesis(seconds: int, slow: float) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from tests.hardening.test_hostile_dockerfiles import build_args, dockerfile

    target = make_target(slow)
    deadline = time.monotonic() + seconds
    runs = 0
    findings = []
    start = time.monotonic()
    while time.monotonic() < deadline:
        @settings(max_examples=500, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(dockerfile(), build_args, st.sampled_from([None, None, "s0", "1"]))
        def batch(data, args, stage):
            nonlocal runs
            runs += 1
            try:
                target(data, args, stage)
            except Finding as exc:
                findings.append({"error": str(exc)[:300], "input": data[:2000].decode("utf-8", "backslashreplace"),
                                 "args": args, "target": stage})

        batch()
    took = time.monotonic() - start
    return {"engine": "hypothesis", "seconds": round(took, 1), "inputs": runs,
            "per_second": round(runs / max(took, 1e-9)), "findings": findings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default=None)
    parser.add_argument("--slow", type=float, default=5.0, help="seconds of CPU one input may take")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "fuzz_frontend")
    args, _ = parser.parse_known_args()
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    seconds = max(1, int(args.minutes * 60))
    args.out.mkdir(parents=True, exist_ok=True)
    if engine == "atheris":
        sys.argv = sys.argv[:1]  # libFuzzer reads the arguments we give it, not ours
        run_atheris(seconds, args.slow, args.out)
        return 0
    result = run_hypothesis(seconds, args.slow)
    print(json.dumps(result, ensure_ascii=False))
    return 1 if result["findings"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
