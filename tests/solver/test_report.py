"""The build report: JSON schema round trip, summary lines, markdown."""
from __future__ import annotations

import json

from builder.solver.cachekey import MissReason
from builder.solver.report import BuildReport, StepReport


def sample() -> BuildReport:
    r = BuildReport(dockerfile="Dockerfile", target="app", duration_s=3.5, image_id="sha256:abc")
    r.steps = [
        StepReport("base", 1, "FROM busybox", "CACHED", 0.01, "sha256:1", saved_s=0.5),
        StepReport("base", 2, "COPY . /app", "DONE", 0.2, "sha256:2",
                   MissReason("files", "1 file changed: app.py", {"changed": ["app.py"]})),
        StepReport("base", 3, "RUN make | tee log", "DONE", 3.0, "sha256:3",
                   MissReason("parent", "the parent step missed (Dockerfile:2 COPY . /app)")),
    ]
    return r


def test_json_schema_and_round_trip(tmp_path):
    r = sample()
    path = tmp_path / "report.json"
    r.write(path)
    data = json.loads(path.read_text())
    assert data["schema"] == "pybuild.report/v1"
    assert data["summary"] == {"steps": 3, "cached": 1, "built": 2, "saved_s": 0.5}
    step = data["steps"][1]
    assert {k: step[k] for k in ("stage", "line", "instruction", "status", "cache_key")} == {
        "stage": "base", "line": 2, "instruction": "COPY . /app", "status": "DONE", "cache_key": "sha256:2"}
    assert step["miss_reason"]["kind"] == "files" and step["miss_reason"]["message"] == "1 file changed: app.py"
    back = BuildReport.load(path)
    assert back.to_json() == r.to_json()


def test_summary_names_each_miss():
    lines = sample().summary_lines()
    assert lines[0].startswith("3 steps: 1 cached, 2 built, 0.5s saved by the cache")
    assert lines[1] == "  miss Dockerfile:2 COPY . /app: 1 file changed: app.py"


def test_markdown_escapes_pipes():
    md = sample().markdown()
    assert md.startswith("### pybuild: 1/3 steps cached")
    assert "RUN make \\| tee log" in md and "1 file changed: app.py" in md
