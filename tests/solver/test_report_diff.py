"""``diff_reports`` and ``pybuild report diff``: what stopped being cached between two builds, and why."""
from __future__ import annotations

import json

import pytest

from builder.cli import main
from builder.solver.cachekey import MissReason
from builder.solver.report import BuildReport, StepReport, diff_reports
from tests.build.conftest import Builder, bbuilder, builder  # noqa: F401  (fixtures)
from tests.store.conftest import busybox_archive  # noqa: F401  (fixture)


def step(line, instruction, status, duration=0.0, stage="0", reason=None):
    return StepReport(stage=stage, line=line, instruction=instruction, status=status, duration_s=duration,
                      miss_reason=reason)


def report(*steps, duration=1.0):
    return BuildReport(dockerfile="Dockerfile", steps=list(steps), duration_s=duration)


def test_cached_to_done_steps_carry_b_s_reason_and_the_first_miss_of_their_chain():
    a = report(step(1, "FROM busybox", "CACHED"), step(2, "ARG V=1", "CACHED"),
               step(3, "COPY . /src", "CACHED", 0.01), step(4, "RUN make", "CACHED", 0.0), duration=0.2)
    b = report(
        step(1, "FROM busybox", "CACHED"),
        step(2, "ARG V=1", "DONE", reason=MissReason(
            "build_arg", "build-arg V changed: '1' → '2' (and 1 more)",
            {"args": [{"name": "V", "old": "1", "new": "2"}, {"name": "W", "old": None, "new": "x"}]})),
        step(3, "COPY . /src", "DONE", 0.3, reason=MissReason(
            "parent", "the parent step missed (Dockerfile:2 ARG V=1)", {"parent": "Dockerfile:2 ARG V=1"})),
        step(4, "RUN make", "DONE", 2.5, reason=MissReason(
            "parent", "the parent step missed (Dockerfile:3 COPY . /src)", {"parent": "Dockerfile:3 COPY . /src"})),
        duration=3.0)
    diff = diff_reports(a, b)
    assert [c.line_b for c in diff.invalidated] == [2, 3, 4]
    assert not diff.added and not diff.removed and not diff.now_cached
    arg, _, run = diff.invalidated
    assert arg.explain() == ["build-arg V changed: '1' → '2' (and 1 more)", "V: '1' → '2'", "W: (unset) → 'x'"]
    assert run.root_cause == "Dockerfile:2 ARG V=1: build-arg V changed: '1' → '2' (and 1 more)"
    assert round(run.delta_s, 2) == 2.5 and round(diff.delta_s, 2) == 2.8
    assert diff.slowest_changes()[0] is run
    text = "\n".join(diff.text_lines("a.json", "b.json"))
    assert "3 steps went from CACHED to DONE:" in text
    assert "first miss in the chain: Dockerfile:2 ARG V=1" in text
    doc = diff.to_json()
    assert doc["schema"] == "pybuild.report-diff/v1"
    assert [c["miss_reason"]["kind"] for c in doc["cached_to_built"]] == ["build_arg", "parent", "parent"]
    json.dumps(doc)  # serialisable as is


def test_files_added_removed_and_steps_moved_edited_added_removed():
    a = report(step(1, "FROM busybox", "CACHED"), step(2, "COPY app /app", "CACHED"),
               step(3, "RUN build", "CACHED"), step(4, "RUN old-step", "DONE", 1.0),
               step(5, "RUN test", "CACHED"))
    files = MissReason("files", "3 files changed: app/a.py, app/new.py, app/gone.py",
                       {"changed": ["app/a.py"], "added": ["app/new.py"], "removed": ["app/gone.py"]})
    b = report(step(1, "FROM busybox", "CACHED"), step(2, "RUN apk add x", "DONE", 4.0, reason=MissReason(
                   "new", "no earlier build of this step")),
               step(3, "COPY app /app", "DONE", reason=files),
               step(4, "RUN build --fast", "DONE", reason=MissReason(
                   "instruction", "the instruction changed", {"old": "build", "new": "build --fast"})),
               step(5, "RUN old-step", "CACHED"))
    diff = diff_reports(a, b)
    copy = next(c for c in diff.invalidated if c.instruction == "COPY app /app")
    assert (copy.line_a, copy.line_b) == (2, 3)  # moved down a line, still the same step
    assert copy.explain() == [files.message, "changed: app/a.py", "added: app/new.py", "removed: app/gone.py"]
    edited = next(c for c in diff.invalidated if c.instruction == "RUN build --fast")
    assert edited.instruction_a == "RUN build" and "was: build" in edited.explain()
    assert [c.instruction for c in diff.now_cached] == ["RUN old-step"]
    assert [s.instruction for s in diff.added] == ["RUN apk add x"]
    assert [s.instruction for s in diff.removed] == ["RUN test"]
    text = "\n".join(diff.text_lines())
    assert "only in B (added):\n  Dockerfile:2 RUN apk add x" in text
    assert "only in A (removed):\n  Dockerfile:5 RUN test" in text
    assert "| `Dockerfile:3` COPY app /app | CACHED" in diff.markdown()


def test_nothing_changed_says_so():
    a = report(step(1, "FROM busybox", "CACHED"), step(2, "RUN x", "CACHED"))
    diff = diff_reports(a, a)
    assert not (diff.invalidated or diff.now_cached or diff.added or diff.removed)
    assert "no step went from CACHED to DONE" in diff.text_lines()


def test_report_diff_of_real_builds(bbuilder: Builder, tmp_path, capsys):
    dockerfile = "FROM busybox\nARG FLAVOUR=plain\nCOPY src/ /src/\nRUN cat /src/* > /all && echo $FLAVOUR >> /all\n"
    root = str(bbuilder.root)

    def cached_build(name: str, flavour: str) -> str:
        """Build, then build again (all cached): that second report is saved as ``name``."""
        bbuilder.build(dockerfile, build_args={"FLAVOUR": flavour})
        _, rep = bbuilder.build(dockerfile, build_args={"FLAVOUR": flavour})
        assert rep.cached == len(rep.steps)
        rep.write(tmp_path / name)
        return str(tmp_path / name)

    bbuilder.write("src/a.txt", "a\n")
    bbuilder.write("src/b.txt", "b\n")
    a = cached_build("a.json", "plain")
    bbuilder.write("src/b.txt", "b changed\n")
    bbuilder.write("src/c.txt", "new\n")
    bbuilder.build(dockerfile, build_args={"FLAVOUR": "plain"})
    assert main(["--root", root, "report", "diff", a, "last"]) == 0
    out = capsys.readouterr().out
    assert "2 steps went from CACHED to DONE:" in out
    assert "changed: src/b.txt" in out and "added: src/c.txt" in out
    assert "first miss in the chain: " in out and "COPY src/ /src/: 2 files changed" in out

    c = cached_build("c.json", "plain")
    bbuilder.build(dockerfile, build_args={"FLAVOUR": "spicy"})
    assert main(["--root", root, "report", "diff", c, "last", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    kinds = {ch["instruction"]: ch["miss_reason"]["kind"] for ch in doc["cached_to_built"]}
    assert kinds == {"ARG FLAVOUR=plain": "build_arg", "COPY src/ /src/": "parent",
                     "RUN cat /src/* > /all && echo $FLAVOUR >> /all": "parent"}
    assert doc["cached_to_built"][-1]["root_cause"].endswith("build-arg FLAVOUR changed: 'plain' → 'spicy'")
    assert doc["b"]["built"] == 3 and doc["a"]["cached"] == doc["a"]["steps"]


@pytest.mark.parametrize("args, words", [
    (["report", "diff", "a.json"], ["usage: pybuild report diff"]),
    (["report", "diff", "/nonexistent/a.json", "/nonexistent/b.json"], ["no report at /nonexistent/a.json"]),
    (["report", "diff", "{tmp}/junk.txt", "{tmp}/junk.txt"], ["junk.txt is not a pybuild report"]),
])
def test_bad_diff_input_is_one_line(args, words, capsys, tmp_path):
    (tmp_path / "junk.txt").write_text("not json\n")
    code = main(["--root", str(tmp_path), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and "Traceback" not in err
    assert all(w in err.splitlines()[0] for w in words), err


def test_a_report_of_another_schema_is_refused(tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps({"schema": "something/v9", "steps": []}))
    code = main(["report", "diff", str(tmp_path / "x.json"), str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and "not a pybuild report (schema 'something/v9')" in err
