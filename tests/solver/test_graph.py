"""The build graph: what depends on what, what --target keeps, what is an error."""
from __future__ import annotations

import pytest

from builder.frontend import DockerfileError, parse
from builder.solver.graph import StepId, build_graph

MULTI = """\
FROM busybox AS base
RUN echo base

FROM base AS a
RUN echo a

FROM busybox AS b
RUN echo b

FROM alpine AS unused
RUN echo never

FROM base
COPY --from=a /a /a
RUN --mount=from=b,target=/b cat /b/x
COPY --from=nginx:latest /etc/nginx /etc/nginx
"""


def test_edges_from_parents_bases_and_reads():
    g = build_graph(parse(MULTI))
    assert [s.ref for s in g.stages()] == ["base", "a", "b", "4"]
    assert g.graph.has_edge(StepId(0, 1), StepId(1, 0))  # FROM base
    assert g.graph.has_edge(StepId(0, 1), StepId(4, 0))
    assert g.graph.has_edge(StepId(1, 1), StepId(4, 1))  # COPY --from=a
    assert g.graph.has_edge(StepId(2, 1), StepId(4, 2))  # RUN --mount=from=b
    assert g.graph.has_edge(StepId(4, 1), StepId(4, 2))  # parent
    assert g.deps[4].image_reads == {3: {"nginx:latest"}}
    assert g.deps[2].base_image == "busybox"


def test_unused_stage_is_not_built():
    g = build_graph(parse(MULTI))
    assert all(s.stage != 3 for s in g.graph.nodes)


def test_target_keeps_only_what_it_needs():
    g = build_graph(parse(MULTI), target="a")
    assert [s.ref for s in g.stages()] == ["base", "a"]
    assert g.steps() == [StepId(0, 0), StepId(0, 1), StepId(1, 0), StepId(1, 1)]


def test_independent_stages_run_in_parallel_levels():
    df = parse("FROM x AS one\nRUN a\nFROM x AS two\nRUN b\nFROM x AS three\nRUN c\n"
               "FROM x\nCOPY --from=one /1 /\nCOPY --from=two /2 /\nCOPY --from=three /3 /\n")
    levels = build_graph(df).parallel_levels()
    assert set(levels[0]) == {StepId(0, 0), StepId(1, 0), StepId(2, 0), StepId(3, 0)}
    assert set(levels[1]) == {StepId(0, 1), StepId(1, 1), StepId(2, 1)}


def test_numeric_from_and_later_name_is_image():
    df = parse("FROM x\nRUN a\nFROM y\nCOPY --from=0 /a /a\nFROM later\nFROM x AS later\n")
    g = build_graph(df, target=1)
    assert g.graph.has_edge(StepId(0, 1), StepId(1, 1))
    # FROM can only name an earlier stage: `later` here is an image.
    assert build_graph(df, target=2).deps[2].base_image == "later"


def test_cycle_is_a_clear_error():
    df = parse("FROM x AS a\nCOPY --from=b /b /b\nFROM x AS b\nCOPY --from=a /a /a\n")
    with pytest.raises(DockerfileError, match="circular dependency between stages: a -> b -> a|b -> a -> b"):
        build_graph(df, target="b")


def test_self_reference_and_unknown_target():
    with pytest.raises(DockerfileError, match="cannot read from itself"):
        build_graph(parse("FROM x AS a\nCOPY --from=a /x /y\n"))
    with pytest.raises(DockerfileError, match="stage 'zzz' not found"):
        build_graph(parse("FROM x\n"), target="zzz")


def test_from_resolver_expands_args():
    df = parse("ARG SRC=a\nFROM x AS a\nFROM x\nCOPY --from=$SRC /x /y\n")
    g = build_graph(df, resolve=lambda _s, _i, w: w.replace("$SRC", "a"))
    assert g.graph.has_edge(StepId(0, 0), StepId(1, 1))
