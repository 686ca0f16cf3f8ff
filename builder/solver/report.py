"""The build report: every step's outcome, its cache key and, for a miss, why.

Written as JSON with ``--report FILE`` (schema ``pybuild.report/v1``, see
docs/report.md), kept as the store's "last" report, rendered as a table by
``pybuild report`` and as markdown for ``$GITHUB_STEP_SUMMARY``.
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
