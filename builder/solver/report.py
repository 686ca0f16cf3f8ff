"""The build report: every step's outcome, its cache key and, for a miss, why.

Written as JSON with ``--report FILE`` (schema ``pybuild.report/v1``, see
docs/report.md), kept as the store's "last" report, rendered as a table by
``pybuild report`` and as markdown for ``$GITHUB_STEP_SUMMARY``. ``diff_reports`` compares
two builds (``pybuild report diff A B``): which steps stopped being cached, and why.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.solver.cachekey import MissReason

REPORT_SCHEMA = "pybuild.report/v1"
STATUSES = ("CACHED", "DONE", "ERROR", "SKIPPED")


@dataclass
class StepReport:
    """One step of one build."""

    stage: str
    line: int
    instruction: str  # e.g. "RUN make", as written (first line, trimmed)
    status: str = "SKIPPED"
    duration_s: float = 0.0
    cache_key: str | None = None
    miss_reason: MissReason | None = None
    # For CACHED steps: how long the step took when it was built, i.e. time saved.
    saved_s: float | None = None
    error: str | None = None
    output_tail: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out: dict[str, object] = {
            "stage": self.stage, "line": self.line, "instruction": self.instruction,
            "status": self.status, "duration_s": round(self.duration_s, 4),
            "cache_key": self.cache_key,
        }
        if self.miss_reason is not None:
            out["miss_reason"] = self.miss_reason.to_json()
        if self.saved_s is not None:
            out["saved_s"] = round(self.saved_s, 4)
        if self.error is not None:
            out["error"] = self.error
            out["output_tail"] = self.output_tail
        return out

    @classmethod
    def from_json(cls, data: dict) -> "StepReport":
        reason = data.get("miss_reason")
        return cls(
            stage=str(data["stage"]), line=int(data["line"]), instruction=str(data["instruction"]),
            status=str(data["status"]), duration_s=float(data.get("duration_s", 0.0)),
            cache_key=data.get("cache_key"),
            miss_reason=MissReason(reason["kind"], reason["message"], reason.get("details", {}))
            if reason else None,
            saved_s=data.get("saved_s"), error=data.get("error"),
            output_tail=list(data.get("output_tail") or []),
        )


@dataclass
class BuildReport:
    dockerfile: str = "Dockerfile"
    context: str = "."
    target: str | None = None
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    status: str = "DONE"  # DONE | ERROR
    image_id: str | None = None
    steps: list[StepReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def cached(self) -> int:
        return sum(s.status == "CACHED" for s in self.steps)

    @property
    def saved_s(self) -> float:
        return sum(s.saved_s or 0.0 for s in self.steps if s.status == "CACHED")

    def misses(self) -> list[StepReport]:
        return [s for s in self.steps if s.status in ("DONE", "ERROR") and s.miss_reason is not None]

    def to_json(self) -> dict:
        return {
            "schema": REPORT_SCHEMA, "dockerfile": self.dockerfile, "context": self.context,
            "target": self.target, "started_at": self.started_at,
            "duration_s": round(self.duration_s, 4), "status": self.status,
            "image_id": self.image_id,
            "summary": {"steps": len(self.steps), "cached": self.cached,
                        "built": sum(s.status == "DONE" for s in self.steps),
                        "saved_s": round(self.saved_s, 3)},
            "steps": [s.to_json() for s in self.steps], "warnings": self.warnings,
        }

    def write(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        tmp.replace(path)

    @classmethod
    def from_json(cls, data: dict) -> "BuildReport":
        if data.get("schema") != REPORT_SCHEMA:
            from builder.errors import PybuildError

            raise PybuildError(f"not a pybuild report (schema {data.get('schema')!r})")
        return cls(dockerfile=data.get("dockerfile", "Dockerfile"), context=data.get("context", "."),
                   target=data.get("target"), started_at=data.get("started_at", 0.0),
                   duration_s=data.get("duration_s", 0.0), status=data.get("status", "DONE"),
                   image_id=data.get("image_id"),
                   steps=[StepReport.from_json(s) for s in data.get("steps", [])],
                   warnings=list(data.get("warnings", [])))

    @classmethod
    def load(cls, path: str | Path) -> "BuildReport":
        return cls.from_json(json.loads(Path(path).read_text()))

    def summary_lines(self) -> list[str]:
        """The end-of-build summary: counts, time saved, and each miss with its reason."""
        built = sum(s.status == "DONE" for s in self.steps)
        lines = [f"{len(self.steps)} steps: {self.cached} cached, {built} built"
                 f"{f', {self.saved_s:.1f}s saved by the cache' if self.saved_s >= 0.05 else ''}"
                 f" ({self.duration_s:.2f}s)"]
        misses = self.misses()
        new = [s for s in misses if s.miss_reason.kind == "new"]
        if new:
            lines.append(f"  {len(new)} step{'s' if len(new) != 1 else ''} built for the first time")
        for s in misses:
            if s.miss_reason.kind != "new":
                lines.append(f"  miss {self.dockerfile}:{s.line} {s.instruction}: {s.miss_reason.message}")
        return lines

    def markdown(self) -> str:
        """A GitHub step summary."""
        rows = ["| step | status | time | why it ran |", "|---|---|---|---|"]
        for s in self.steps:
            why = s.miss_reason.message if s.miss_reason and s.status != "CACHED" else ""
            instr = s.instruction.replace("|", "\\|")
            why = why.replace("|", "\\|")
            rows.append(f"| `{self.dockerfile}:{s.line}` {instr} | {s.status} | {s.duration_s:.2f}s | {why} |")
        head = f"### pybuild: {self.cached}/{len(self.steps)} steps cached, {self.duration_s:.1f}s\n\n"
        return head + "\n".join(rows) + "\n"


# ------------------------------------------------------------------ comparing two reports

DIFF_SCHEMA = "pybuild.report-diff/v1"


@dataclass
class StepChange:
    """One step present in both reports: its status and time in each, and why B ran it."""

    stage: str
    instruction: str
    line_a: int
    line_b: int
    status_a: str
    status_b: str
    duration_a: float
    duration_b: float
    reason: MissReason | None = None  # B's miss reason (for a step B ran)
    root_cause: str | None = None  # for a "parent" miss: the first step of the chain that missed, and why
    instruction_a: str | None = None  # A's text when the instruction was edited

    @property
    def delta_s(self) -> float:
        return self.duration_b - self.duration_a

    def explain(self) -> list[str]:
        """The reason in a sentence, then its details (files, build args, the parent chain)."""
        if self.reason is None:
            return ["no reason recorded in B"]
        lines = [self.reason.message]
        details = dict(self.reason.details or {})
        if self.reason.kind == "files":
            for what in ("changed", "added", "removed"):
                paths = list(details.get(what) or [])
                if paths:
                    more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
                    lines.append(f"{what}: {', '.join(paths[:10])}{more}")
        elif self.reason.kind in ("build_arg", "env"):
            items = details.get("args" if self.reason.kind == "build_arg" else "env") or []
            if len(items) > 1:  # the sentence names the first only
                for item in items:
                    lines.append(f"{item.get('name')}: {_show(item.get('old'))} → {_show(item.get('new'))}")
        elif self.reason.kind in ("instruction", "base_image", "platform"):
            if "old" in details or "new" in details:
                lines.append(f"was: {details.get('old')}")
                lines.append(f"now: {details.get('new')}")
        if self.root_cause:
            lines.append(f"first miss in the chain: {self.root_cause}")
        return lines

    def to_json(self) -> dict:
        return {"stage": self.stage, "instruction": self.instruction, "instruction_a": self.instruction_a,
                "line_a": self.line_a,
                "line_b": self.line_b, "status_a": self.status_a, "status_b": self.status_b,
                "duration_a_s": round(self.duration_a, 4), "duration_b_s": round(self.duration_b, 4),
                "delta_s": round(self.delta_s, 4),
                "miss_reason": self.reason.to_json() if self.reason else None,
                "root_cause": self.root_cause, "explanation": self.explain() if self.reason else []}


@dataclass
class ReportDiff:
    """What changed between build A and build B of (usually) the same Dockerfile."""

    a: BuildReport
    b: BuildReport
    invalidated: list[StepChange] = field(default_factory=list)  # CACHED in A, DONE in B
    now_cached: list[StepChange] = field(default_factory=list)  # DONE in A, CACHED in B
    other_changes: list[StepChange] = field(default_factory=list)  # any other status change
    same: list[StepChange] = field(default_factory=list)  # status unchanged
    added: list[StepReport] = field(default_factory=list)  # only in B
    removed: list[StepReport] = field(default_factory=list)  # only in A

    @property
    def delta_s(self) -> float:
        return self.b.duration_s - self.a.duration_s

    def slowest_changes(self, n: int = 5, threshold: float = 0.05) -> list[StepChange]:
        """The steps whose time changed most (by at least ``threshold`` seconds)."""
        every = self.invalidated + self.now_cached + self.other_changes + self.same
        moved = [c for c in every if abs(c.delta_s) >= threshold]
        return sorted(moved, key=lambda c: -abs(c.delta_s))[:n]

    def to_json(self) -> dict:
        def side(r: BuildReport) -> dict:
            return {"dockerfile": r.dockerfile, "started_at": r.started_at, "duration_s": round(r.duration_s, 4),
                    "status": r.status, "steps": len(r.steps), "cached": r.cached,
                    "built": sum(s.status == "DONE" for s in r.steps), "image_id": r.image_id}

        def step(s: StepReport) -> dict:
            return {"stage": s.stage, "line": s.line, "instruction": s.instruction, "status": s.status,
                    "duration_s": round(s.duration_s, 4)}

        return {"schema": DIFF_SCHEMA, "a": side(self.a), "b": side(self.b), "delta_s": round(self.delta_s, 4),
                "cached_to_built": [c.to_json() for c in self.invalidated],
                "built_to_cached": [c.to_json() for c in self.now_cached],
                "other_status_changes": [c.to_json() for c in self.other_changes],
                "added": [step(s) for s in self.added], "removed": [step(s) for s in self.removed],
                "biggest_time_changes": [c.to_json() for c in self.slowest_changes()]}

    def text_lines(self, name_a: str = "A", name_b: str = "B") -> list[str]:
        def summary(r: BuildReport, name: str) -> str:
            built = sum(s.status == "DONE" for s in r.steps)
            return (f"{name}: {len(r.steps)} steps, {r.cached} cached, {built} built, {r.duration_s:.2f}s"
                    f"{'' if r.status == 'DONE' else f' ({r.status})'}")

        df = self.b.dockerfile
        lines = [summary(self.a, name_a), summary(self.b, name_b) + f" ({self.delta_s:+.2f}s)"]
        if self.invalidated:
            n = len(self.invalidated)
            lines += ["", f"{n} step{'s' if n != 1 else ''} went from CACHED to DONE:"]
            for c in self.invalidated:
                lines.append(f"  {df}:{c.line_b} {c.instruction}  [{c.stage}]  "
                             f"{c.duration_a:.2f}s → {c.duration_b:.2f}s")
                if c.instruction_a:
                    lines.append(f"      (in {name_a}: {c.instruction_a})")
                lines += [f"      {line}" for line in c.explain()]
        else:
            lines += ["", "no step went from CACHED to DONE"]
        if self.now_cached:
            lines += ["", f"{len(self.now_cached)} step{'s' if len(self.now_cached) != 1 else ''} "
                          "went from DONE to CACHED:"]
            lines += [f"  {df}:{c.line_b} {c.instruction}  [{c.stage}]  {c.duration_a:.2f}s → {c.duration_b:.2f}s"
                      for c in self.now_cached]
        if self.other_changes:
            lines += ["", "other status changes:"]
            lines += [f"  {df}:{c.line_b} {c.instruction}  [{c.stage}]  {c.status_a} → {c.status_b}"
                      for c in self.other_changes]
        if self.added:
            lines += ["", f"only in {name_b} (added):"]
            lines += [f"  {df}:{s.line} {s.instruction}  [{s.stage}]  {s.status} {s.duration_s:.2f}s"
                      for s in self.added]
        if self.removed:
            lines += ["", f"only in {name_a} (removed):"]
            lines += [f"  {self.a.dockerfile}:{s.line} {s.instruction}  [{s.stage}]  {s.status} "
                      f"{s.duration_s:.2f}s" for s in self.removed]
        slow = self.slowest_changes()
        if slow:
            lines += ["", "biggest time changes:"]
            lines += [f"  {c.delta_s:+.2f}s  {df}:{c.line_b} {c.instruction}  ({c.duration_a:.2f}s → "
                      f"{c.duration_b:.2f}s)" for c in slow]
        return lines

    def markdown(self, name_a: str = "A", name_b: str = "B") -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        rows = [f"### pybuild: {name_b} vs {name_a}: {self.delta_s:+.2f}s, "
                f"{len(self.invalidated)} step(s) no longer cached", "",
                "| step | A | B | why B ran it |", "|---|---|---|---|"]
        for c in self.invalidated + self.now_cached + self.other_changes:
            why = "; ".join(c.explain()) if c.status_b in ("DONE", "ERROR") else ""
            rows.append(f"| `{self.b.dockerfile}:{c.line_b}` {cell(c.instruction)} | {c.status_a} "
                        f"{c.duration_a:.2f}s | {c.status_b} {c.duration_b:.2f}s | {cell(why)} |")
        for s in self.added:
            rows.append(f"| `{self.b.dockerfile}:{s.line}` {cell(s.instruction)} | (absent) | "
                        f"{s.status} {s.duration_s:.2f}s | added |")
        for s in self.removed:
            rows.append(f"| `{self.a.dockerfile}:{s.line}` {cell(s.instruction)} | {s.status} "
                        f"{s.duration_s:.2f}s | (absent) | removed |")
        return "\n".join(rows) + "\n"


def _show(value: object) -> str:
    return "(unset)" if value is None else repr(value)


def _step_name(report: BuildReport, s: StepReport) -> str:
    return f"{report.dockerfile}:{s.line} {s.instruction}"


def _root_cause(report: BuildReport, step: StepReport) -> str | None:
    """For a step that missed because its parent did: the first step up the chain that missed for
    a reason of its own, and that reason (through ``FROM stage`` into that stage's last step)."""
    by_name = {_step_name(report, s): s for s in report.steps}
    last_of_stage = {s.stage.lower(): s for s in report.steps}
    seen: set[int] = set()
    current = step
    while current.miss_reason is None or current.miss_reason.kind == "parent":
        if id(current) in seen:
            return None
        seen.add(id(current))
        if current.miss_reason is not None:
            current = by_name.get(str((current.miss_reason.details or {}).get("parent")))
        else:  # a cached FROM of another stage: that stage's result changed
            words = current.instruction.split()
            current = last_of_stage.get(words[1].lower()) if len(words) > 1 and words[0].upper() == "FROM" \
                else None
        if current is None:
            return None
    if current is step:
        return None
    return f"{_step_name(report, current)}: {current.miss_reason.message}"


def diff_reports(a: BuildReport, b: BuildReport) -> ReportDiff:
    """Compare two builds step by step (pure).

    Each stage's steps are aligned by their instruction text (``difflib``), so a step keeps its
    match when lines move; an edited instruction pairs with the one it replaced; a step only in
    one report is added or removed.
    """
    import difflib

    pairs: list[tuple[StepReport, StepReport]] = []
    added: list[StepReport] = []
    removed: list[StepReport] = []
    stages = list(dict.fromkeys([s.stage for s in b.steps] + [s.stage for s in a.steps]))
    for stage in stages:
        old = [s for s in a.steps if s.stage == stage]
        new = [s for s in b.steps if s.stage == stage]
        matcher = difflib.SequenceMatcher(a=[s.instruction for s in old], b=[s.instruction for s in new],
                                          autojunk=False)
        for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
            n = min(i2 - i1, j2 - j1)  # equal blocks pair all; a replaced block pairs in order
            pairs += list(zip(old[i1:i1 + n], new[j1:j1 + n]))
            removed += old[i1 + n:i2]
            added += new[j1 + n:j2]
    order_b = {id(s): i for i, s in enumerate(b.steps)}
    order_a = {id(s): i for i, s in enumerate(a.steps)}
    diff = ReportDiff(a, b, added=sorted(added, key=lambda s: order_b[id(s)]),
                      removed=sorted(removed, key=lambda s: order_a[id(s)]))
    for sa, sb in sorted(pairs, key=lambda p: order_b[id(p[1])]):
        ran = sb.status in ("DONE", "ERROR")
        change = StepChange(sb.stage, sb.instruction, sa.line, sb.line, sa.status, sb.status, sa.duration_s,
                            sb.duration_s, reason=sb.miss_reason if ran else None,
                            root_cause=_root_cause(b, sb) if ran else None,
                            instruction_a=sa.instruction if sa.instruction != sb.instruction else None)
        if sa.status == "CACHED" and sb.status == "DONE":
            diff.invalidated.append(change)
        elif sa.status == "DONE" and sb.status == "CACHED":
            diff.now_cached.append(change)
        elif sa.status != sb.status:
            diff.other_changes.append(change)
        else:
            diff.same.append(change)
    return diff
