"""The build graph: stages and steps of a Dockerfile as a networkx DAG.

``build_graph(dockerfile, target)`` makes one node per step — each stage's
FROM, then each instruction — with edges from a step's parent (the step
before it in its stage) and from the stages it reads: ``FROM <stage>``,
``COPY --from=<stage>`` and ``RUN --mount=from=<stage>``. Only what the
target needs is kept. A name that is not a stage is an image reference.
A cycle between stages is an error naming the stages involved.

Pure: no files, images or processes. Expansion of ``--from`` values (they may
hold ARGs) is done by the caller, who passes a resolver.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import networkx as nx

from builder.frontend.errors import DockerfileError
from builder.frontend.instructions import CopyInstruction, Instruction, RunInstruction
from builder.frontend.stages import Dockerfile, Stage


@dataclass(frozen=True)
class StepId:
    """A step: instruction ``pos`` of stage ``stage`` (``pos`` 0 is the FROM)."""

    stage: int
    pos: int

    def __str__(self) -> str:
        return f"{self.stage}/{self.pos}"


@dataclass
class StageDeps:
    """What one stage reads besides its own previous steps."""

    base_stage: int | None = None  # FROM <stage>
    base_image: str | None = None  # FROM <image> (None for a stage base)
    # step pos -> stages it reads (COPY --from, RUN --mount=from)
    reads: dict[int, set[int]] = field(default_factory=dict)
    # step pos -> images it reads (COPY --from=<image>, RUN --mount=from=<image>)
    image_reads: dict[int, set[str]] = field(default_factory=dict)


@dataclass
class BuildGraph:
    """The steps to run, in a DAG, and the stages they belong to."""

    dockerfile: Dockerfile
    target: Stage
    graph: nx.DiGraph
    deps: dict[int, StageDeps]

    def stages(self) -> list[Stage]:
        """The stages that must be built, in file order."""
        wanted = sorted({s.stage for s in self.graph.nodes})
        return [self.dockerfile.stages[i] for i in wanted]

    def steps(self) -> list[StepId]:
        """Every step in an order that respects the dependencies (stable: file order)."""
        return list(nx.lexicographical_topological_sort(self.graph, key=lambda s: (s.stage, s.pos)))

    def instruction(self, step: StepId) -> Instruction:
        stage = self.dockerfile.stages[step.stage]
        return stage.from_ if step.pos == 0 else stage.instructions[step.pos - 1]

    def last_step(self, stage: int) -> StepId:
        return StepId(stage, len(self.dockerfile.stages[stage].instructions))

    def parallel_levels(self) -> list[list[StepId]]:
        """Groups of steps whose dependencies are all in earlier groups."""
        return [sorted(g, key=lambda s: (s.stage, s.pos)) for g in nx.topological_generations(self.graph)]


def _stage_ref(dockerfile: Dockerfile, name: str, before: int | None) -> int | None:
    """The stage a ``--from``/FROM name refers to, or None when it names an image.

    A number refers to a stage by index; names are case-insensitive. FROM can
    only refer to an earlier stage (``before``); a later name is an image.
    """
    if name.isdigit():
        i = int(name)
        return i if i < len(dockerfile.stages) else None
    lower = name.lower()
    for stage in dockerfile.stages:
        if before is not None and stage.index >= before:
            break
        if stage.name == lower:
            return stage.index
    return None


def stage_dependencies(
    dockerfile: Dockerfile,
    resolve: Callable[[Stage, Instruction, str], str] | None = None,
) -> dict[int, StageDeps]:
    """For every stage: its base and the stages/images its steps read.

    ``resolve(stage, instruction, word)`` expands a ``--from`` value (ARGs);
    by default the word is used as written.
    """
    resolve = resolve or (lambda _s, _i, w: w)
    deps: dict[int, StageDeps] = {}
    for stage in dockerfile.stages:
        d = StageDeps()
        base = resolve(stage, stage.from_, stage.from_.image)
        ref = _stage_ref(dockerfile, base, before=stage.index) if base.lower() != "scratch" else None
        if ref is not None:
            d.base_stage = ref
        else:
            d.base_image = base
        for pos, instr in enumerate(stage.instructions, start=1):
            sources: list[str] = []
            if isinstance(instr, CopyInstruction) and getattr(instr, "from_", None):
                sources.append(instr.from_)  # type: ignore[arg-type]
            if isinstance(instr, RunInstruction):
                sources.extend(m.from_ for m in instr.mounts if m.from_)
            for word in sources:
                name = resolve(stage, instr, word)
                ref = _stage_ref(dockerfile, name, before=None)
                if ref is not None:
                    if ref == stage.index:
                        raise DockerfileError(
                            f"stage {stage.ref!r} cannot read from itself", line=instr.line,
                            col=instr.col, filename=dockerfile.filename,
                            hint="--from must name another stage or an image",
                        )
                    d.reads.setdefault(pos, set()).add(ref)
                else:
                    d.image_reads.setdefault(pos, set()).add(name)
        deps[stage.index] = d
    return deps


def build_graph(
    dockerfile: Dockerfile,
    target: str | int | None = None,
    resolve: Callable[[Stage, Instruction, str], str] | None = None,
) -> BuildGraph:
    """The DAG of steps needed for ``target`` (default: the last stage)."""
    target_stage = dockerfile.stage(target) if target is not None else dockerfile.stages[-1]
    deps = stage_dependencies(dockerfile, resolve)

    # Stage-level graph first: cycles are reported by stage name.
    stage_graph = nx.DiGraph()
    stage_graph.add_nodes_from(d for d in deps)
    for idx, d in deps.items():
        if d.base_stage is not None:
            stage_graph.add_edge(d.base_stage, idx)
        for reads in d.reads.values():
            for src in reads:
                stage_graph.add_edge(src, idx)
    needed = nx.ancestors(stage_graph, target_stage.index) | {target_stage.index}
    sub = stage_graph.subgraph(needed)
    if not nx.is_directed_acyclic_graph(sub):
        cycle = nx.find_cycle(sub)
        names = " -> ".join(dockerfile.stages[a].ref for a, _ in cycle) + " -> " + \
            dockerfile.stages[cycle[0][0]].ref
        first = dockerfile.stages[cycle[0][0]]
        raise DockerfileError(f"circular dependency between stages: {names}", line=first.from_.line,
                              filename=dockerfile.filename,
                              hint="a stage cannot (indirectly) copy from a stage that needs it")

    graph = nx.DiGraph()
    for idx in sorted(needed):
        stage = dockerfile.stages[idx]
        d = deps[idx]
        first = StepId(idx, 0)
        graph.add_node(first)
        if d.base_stage is not None:
            graph.add_edge(StepId(d.base_stage, len(dockerfile.stages[d.base_stage].instructions)), first)
        prev = first
        for pos in range(1, len(stage.instructions) + 1):
            step = StepId(idx, pos)
            graph.add_edge(prev, step)
            for src in d.reads.get(pos, ()):
                graph.add_edge(StepId(src, len(dockerfile.stages[src].instructions)), step)
            prev = step
    return BuildGraph(dockerfile, target_stage, graph, deps)
