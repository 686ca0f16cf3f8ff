"""``pybuild parse`` as a user runs it: output formats, errors and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from builder.cli import main
from tests.conftest import CORPUS, FIXTURES


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], input=stdin,
                          capture_output=True, timeout=60)


def test_parse_json_of_the_demo(capsys):
    assert main(["parse", "-f", str(FIXTURES / "hello" / "Dockerfile")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "pybuild.frontend/v1"
    assert [s["name"] for s in out["stages"]] == ["base", "build", None]
    assert out["meta_args"][0]["args"] == [{"name": "GREETING", "default": "hello"}]
    run = out["stages"][1]["instructions"][1]
    assert run["instruction"] == "RUN" and run["heredocs"][0]["name"] == "EOF"


def test_parse_context_dir_and_build_args(capsys):
    assert main(["parse", str(FIXTURES / "hello"), "--build-arg", "GREETING=hi"]) == 0
    out = json.loads(capsys.readouterr().out)
    exp = out["expanded"]
    assert exp["meta_args"] == {"GREETING": "hi"}
    assert exp["stages"][0]["env"] == {"APP_HOME": "/app", "GREETING": "hi"}
    assert exp["stages"][0]["instructions"][-1]["path"] == "/app"


@pytest.mark.parametrize("case", ["nginx", "escape", "lk4d4-the-edge-case-generator"])
def test_dump_matches_buildkit_result(case):
    folder = CORPUS / "parser" / "testfiles" / case
    proc = run_cli("parse", "--format", "dump", "-f", "-", stdin=(folder / "Dockerfile").read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == (folder / "result").read_text()


def test_error_is_one_clear_message_without_traceback(tmp_path):
    df = tmp_path / "Dockerfile"
    df.write_text("FROM busybox\nRUNN make\n")
    proc = run_cli("parse", "-f", str(df))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.splitlines()[0] == f"error: {df}:2:1: unknown instruction: RUNN (did you mean RUN?)"
    assert "Traceback" not in err and "hint:" in err


@pytest.mark.parametrize("case", ["empty_dockerfile", "env_no_value", "only_comments", "shykes-nested-json"])
def test_negative_corpus_exits_non_zero(case):
    proc = run_cli("parse", "-f", str(CORPUS / "parser" / "testfiles-negative" / case / "Dockerfile"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"error: ") and b"Traceback" not in proc.stderr


def test_missing_file(tmp_path):
    proc = run_cli("parse", "-f", str(tmp_path / "nope"))
    assert proc.returncode == 2 and b"no such file" in proc.stderr
