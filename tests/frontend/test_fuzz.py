"""Hostile and random Dockerfiles: only ``DockerfileError`` ever comes out, in linear time."""
from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.frontend import DockerfileError, ExpansionScope, parse, resolve_meta_args
from tests.frontend.conftest import TESTFILES, read_case

SEEDS = [read_case("testfiles", c)[0] for c in TESTFILES]


def parse_fully(data: bytes) -> None:
    """Parse, type, and expand every stage; any failure must be a DockerfileError."""
    try:
        df = parse(data)
        meta = resolve_meta_args(df, {"A": "1"})
        for stage in df.stages:
            scope = ExpansionScope(escape=df.escape, build_args={"A": "1"}, meta_values=meta)
            for instr in stage.instructions:
                scope.expand(instr)
    except DockerfileError as exc:
        # Always renderable as one message with a location.
        assert str(exc).startswith("Dockerfile")
        exc.render()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data):
    parse_fully(data)


_noise = st.sampled_from([b"\\", b"`", b"\n", b"\r\n", b"<<EOF", b"<<-'X'", b"${", b"}", b"$", b"[", b"]",
                          b'"', b"'", b"--", b"=", b"# escape=`\n", b"\t", b"\x00", b"\xff", b"ONBUILD ",
                          b"FROM ", b"RUN ", b"COPY ", b"ENV ", b"ARG ", b" AS ", b"\xc3\xa9", b"HEALTHCHECK "])


@st.composite
def _mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0:
            data[pos:pos] = draw(_noise)
        elif op == 1:
            del data[pos:pos + draw(st.integers(1, 20))]
        else:
            data[pos:pos] = draw(st.binary(max_size=8))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_corpus(data):
    parse_fully(data)


def _timed(text: str) -> float:
    # CPU time of this process: other work on the machine does not count.
    start = time.process_time()
    parse_fully(text.encode())
    return time.process_time() - start


def test_pathological_continuations_are_linear():
    # ~1 MB of continued lines: one instruction of 50,000 pieces.
    piece = "RUN echo aaaaaaaaaa \\\n" + "  bbbbbbbbbb \\\n" * 50_000 + "  end\n"
    text = "FROM x\n" + piece
    assert len(text) > 700_000
    assert _timed(text) < 3.0  # generous for a loaded 2-core CI machine; typical is far lower


def test_many_instructions_scale_linearly():
    small = "FROM x\n" + "RUN echo hi\nENV A=$A:1\n" * 500
    large = "FROM x\n" + "RUN echo hi\nENV A=$A:1\n" * 5000
    t_small = min(_timed(small) for _ in range(3))
    t_large = min(_timed(large) for _ in range(3))
    # 10x the input may cost at most ~20x the time (linear with noise), never quadratic (100x).
    assert t_large < t_small * 20
