"""Progress displays: what a CI log and a JSON consumer see."""
from __future__ import annotations

import io
import json

import pytest

from builder.errors import UsageError
from builder.progress import JsonProgress, PlainProgress, QuietProgress, make_progress


def drive(p):
    p.started(1, "[base 1/2] FROM busybox")
    p.finished(1, "CACHED", 0.0)
    p.started(2, "[base 2/2] RUN make")
    p.log(2, "compiling\n")
    p.finished(2, "DONE", 1.25)
    p.started(3, "[base 3/3] RUN false")
    p.finished(3, "ERROR", 0.1, "exit code 1")
    p.warn("build-arg X was not consumed")
    p.close()


def test_plain_is_prefixed_line_by_line():
    out = io.StringIO()
    drive(PlainProgress(out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "#1 [base 1/2] FROM busybox" and lines[1] == "#1 CACHED"
    assert lines[3].startswith("#2 ") and lines[3].endswith(" compiling")
    assert lines[4] == "#2 DONE 1.2s" or lines[4] == "#2 DONE 1.3s"
    assert lines[6] == "#3 ERROR: exit code 1"
    assert lines[7] == "WARNING: build-arg X was not consumed"


def test_json_is_one_event_per_line():
    out = io.StringIO()
    drive(JsonProgress(out))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["step_started", "step_finished", "step_started", "step_log",
                                           "step_finished", "step_started", "step_finished", "warning"]
    assert events[3] == {**events[3], "step": 2, "line": "compiling"}
    assert events[4]["status"] == "DONE" and events[4]["duration_s"] == 1.25


def test_auto_picks_plain_off_a_terminal_and_quiet_is_silent():
    assert isinstance(make_progress("auto", io.StringIO()), PlainProgress)
    assert isinstance(make_progress("quiet", io.StringIO()), QuietProgress)
    with pytest.raises(UsageError):
        make_progress("fancy", io.StringIO())


def test_tty_renders_finished_steps():
    out = io.StringIO()
    p = make_progress("tty", out)
    drive(p)
    text = out.getvalue()
    assert "RUN make" in text and "DONE" in text and "ERROR" in text
