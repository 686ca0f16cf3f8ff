"""A secondary cross-check with ``dockerfile-parse`` (the design card's package).

dockerfile-parse is not a conforming parser, so it is never on the build path;
these tests pin down where it agrees with pybuild and where it is known to differ:

* it accepts all four BuildKit negative cases (pybuild rejects them);
* it turns heredoc bodies into instructions;
* it ends a continuation at a blank line (BuildKit skips the blank line);
* it lists comments as ``COMMENT`` instructions.
"""
from __future__ import annotations

import io

import pytest

dfp = pytest.importorskip("dockerfile_parse", reason="pip install dockerfile-parse")

from builder.frontend import DockerfileError, parse_dockerfile  # noqa: E402
from tests.frontend.conftest import NEGATIVE, read_case  # noqa: E402


def structure(text: str) -> list[dict]:
    return dfp.DockerfileParser(fileobj=io.BytesIO(text.encode())).structure


def test_agrees_on_plain_instructions_and_lines():
    text = "FROM busybox AS a\n# comment\nRUN echo 1 && \\\n    echo 2\nCOPY a /b\nCMD [\"x\"]\n"
    # It reports comments as instructions too; leave those out.
    theirs = [(s["instruction"], s["startline"] + 1, s["endline"] + 1) for s in structure(text)
              if s["instruction"] != "COMMENT"]
    ours = [(n.value, n.start_line, n.end_line) for n in parse_dockerfile(text).ast.children]
    assert theirs == ours


@pytest.mark.parametrize("case", NEGATIVE)
def test_known_difference_accepts_negative_cases(case):
    data, _ = read_case("testfiles-negative", case)
    structure(data.decode())  # dockerfile-parse does not object ...
    with pytest.raises(DockerfileError):  # ... BuildKit and pybuild do
        parse_dockerfile(data)


def test_known_difference_heredoc_bodies_become_instructions():
    text = "FROM a\nRUN <<EOF\necho hi\nEOF\n"
    assert [s["instruction"] for s in structure(text)] == ["FROM", "RUN", "ECHO", "EOF"]
    ours = parse_dockerfile(text).ast.children
    assert [n.value for n in ours] == ["FROM", "RUN"] and ours[1].heredocs[0].content == "echo hi\n"


def test_known_difference_blank_line_ends_continuation():
    text = "FROM a\nRUN echo 1 \\\n\n  two\n"
    theirs = [s["instruction"] for s in structure(text)]
    ours = parse_dockerfile(text).ast.children
    assert len(ours) == 2 and ours[1].args == ["echo 1   two"]
    assert theirs != ["FROM", "RUN"]
