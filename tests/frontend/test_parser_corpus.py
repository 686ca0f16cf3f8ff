"""Conformance with BuildKit's own parser tests (../shared/corpus/buildkit/parser)."""
from __future__ import annotations

import pytest

from builder.frontend import DockerfileError, parse_dockerfile
from builder.frontend.dump import dump
from builder.frontend.lexer import parse_heredoc_word, parse_json_array, NotStringArray
from builder.frontend.parser import parse_name_val, parse_words
from tests.frontend.conftest import NEGATIVE, PARSER, TESTFILES, extracted, read_case


def test_corpus_is_complete():
    assert len(TESTFILES) == 33
    assert len(NEGATIVE) == 4


@pytest.mark.parametrize("case", TESTFILES)
def test_testfile_dump_matches_buildkit(case):
    data, folder = read_case("testfiles", case)
    want = (folder / "result").read_text(encoding="utf-8")
    assert dump(parse_dockerfile(data).ast) == want


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_case_is_rejected(case):
    data, _ = read_case("testfiles-negative", case)
    with pytest.raises(DockerfileError) as err:
        parse_dockerfile(data)
    # One line, with a location, never an internal error.
    assert str(err.value).startswith("Dockerfile")


def test_negative_messages_match_buildkit():
    messages = {}
    for case in NEGATIVE:
        data, _ = read_case("testfiles-negative", case)
        with pytest.raises(DockerfileError) as err:
            parse_dockerfile(data)
        messages[case] = err.value.message
    assert messages == {
        "empty_dockerfile": "file with no instructions",
        "only_comments": "file with no instructions",
        "env_no_value": "ENV must have two arguments",
        "shykes-nested-json": "when using JSON array syntax, arrays must be comprised of strings only",
    }


def test_line_numbers():
    data = (PARSER / "testfile-line" / "Dockerfile").read_bytes()
    want = extracted("parse_misc.json")["line_numbers"]
    root = parse_dockerfile(data).ast
    assert (root.start_line, root.end_line) == (want["root_start_line"], want["root_end_line"])
    assert [[c.start_line, c.end_line] for c in root.children] == want["child_line_ranges"]


def test_empty_continuation_lines_warn():
    table = extracted("parse_misc.json")["empty_continuation_warnings"]
    result = parse_dockerfile(table["dockerfile"])
    assert len(result.warnings) == table["expected_warning_count"]
    for (line, message), needles in zip(result.warnings, table["warning_short_contains"]):
        for needle in needles:
            if needle.startswith("Empty continuation"):
                needle = needle.lower()
            assert needle in message


def test_line_too_long():
    table = extracted("parse_misc.json")["line_too_long"]
    fill = table["placeholder_value"]["repeat"] * table["placeholder_value"]["count"]
    text = table["dockerfile_template"].replace(table["template_placeholder"], fill)
    with pytest.raises(DockerfileError) as err:
        parse_dockerfile(text)
    assert table["expected_error"] in err.value.message
    # A line of exactly 65535 bytes fits.
    prefix = "\t\tLABEL test="
    assert prefix + table["template_placeholder"] in table["dockerfile_template"]
    fits = fill[: 65535 - len(prefix)]
    parse_dockerfile(table["dockerfile_template"].replace(table["template_placeholder"], fits))
    with pytest.raises(DockerfileError):
        parse_dockerfile(table["dockerfile_template"].replace(table["template_placeholder"], fits + "a"))


@pytest.mark.parametrize("case", extracted("parse_words.json")["cases"], ids=lambda c: c["input"])
def test_parse_words(case):
    assert parse_words(case["input"], "\\") == case["expect"]


@pytest.mark.parametrize("case", extracted("line_parsers.json")["cases"], ids=lambda c: c["input"])
def test_parse_name_val(case):
    if "expect_error" in case:
        with pytest.raises(DockerfileError, match=case["expect_error"]):
            parse_name_val(case["input"], case["key"], "\\", None)
    else:
        assert [n.value for n in parse_name_val(case["input"], case["key"], "\\", None)] == case["expect_values"]


@pytest.mark.parametrize("case", extracted("json_arrays.json")["valid"], ids=lambda c: c["input"])
def test_json_arrays_valid(case):
    assert parse_json_array(case["input"]) == case["expect"]


@pytest.mark.parametrize("text", extracted("json_arrays.json")["invalid_not_string_array"])
def test_json_arrays_not_strings(text):
    with pytest.raises(NotStringArray):
        parse_json_array(text)
    # ... and in a Dockerfile that is an error, not a fall-back to shell form.
    with pytest.raises(DockerfileError, match="arrays must be comprised of strings only"):
        parse_dockerfile(f"FROM scratch\nCMD {text}\n")


def _heredoc_tuple(h):
    return {"Name": h.name, "FileDescriptor": h.file_descriptor, "Expand": h.expand,
            "Chomp": h.chomp, "Content": h.content}


def test_extracts_heredocs():
    table = extracted("heredoc.json")["extracts_heredoc"]
    root = parse_dockerfile(table["dockerfile"]).ast
    # The Go test lists, for each child i+1 (after the FROM), its heredocs.
    got = [[_heredoc_tuple(h) for h in c.heredocs] or None for c in root.children[1:]]
    assert got == table["expected_heredocs_by_child"]


def test_json_form_has_no_heredocs():
    table = extracted("heredoc.json")["json_form_has_no_heredocs"]
    root = parse_dockerfile(table["dockerfile"]).ast
    for i in table["children_without_heredocs"]:
        assert root.children[i].heredocs == []


def test_chomp_content():
    from builder.frontend.lexer import Heredoc

    table = extracted("heredoc.json")["chomp_content"]
    assert Heredoc("X", chomp=True, content=table["input"]).chomped() == table["expected"]


@pytest.mark.parametrize("word", extracted("heredoc.json")["parse_heredoc_word"]["valid_name_EOF"])
def test_heredoc_word_valid(word):
    assert parse_heredoc_word(word).name == "EOF"


@pytest.mark.parametrize("word", extracted("heredoc.json")["parse_heredoc_word"]["invalid_error"])
def test_heredoc_word_invalid(word):
    with pytest.raises(DockerfileError):
        parse_heredoc_word(word)


@pytest.mark.parametrize("word", extracted("heredoc.json")["parse_heredoc_word"]["not_heredoc_nil"])
def test_heredoc_word_not_heredoc(word):
    assert parse_heredoc_word(word) is None


@pytest.mark.parametrize("case", extracted("heredoc.json")["heredocs_from_line"]["cases"],
                         ids=lambda c: c["line"])
def test_heredocs_from_line(case):
    from builder.frontend.lexer import heredocs_from_line

    # At the corpus commit `RUN <<- EOF` yields no heredoc (see the corpus README).
    want = case.get("returned_at_73ed6825", case["heredoc_names"]) or []
    assert [h.name for h in heredocs_from_line(case["line"])] == want


def test_directives_parse_all():
    from builder.frontend.directives import parse_all

    for case in extracted("directives.json")["directive_parser_parse_all"]["cases"]:
        got = [{"name": d.name, "value": d.value} for d in parse_all(case["input"])]
        assert got == case["expect"], case


@pytest.mark.parametrize("case", extracted("directives.json")["detect_syntax"]["cases"],
                         ids=lambda c: c["input"][:30])
def test_detect_syntax(case):
    from builder.frontend.directives import detect_syntax

    found = detect_syntax(case["input"])
    assert (found is not None) == case["ok"]
    if found is not None:
        if "ref" in case:
            assert found.ref == case["ref"]
        if "cmdline" in case:
            assert found.value == case["cmdline"]
        if "line" in case:
            assert found.line == case["line"]


@pytest.mark.parametrize("case", extracted("directives.json")["parse_directive"]["cases"],
                         ids=lambda c: c["input"][:30])
def test_parse_directive(case):
    from builder.frontend.directives import parse_directive

    found = parse_directive(case["key"], case["input"])
    assert (found is not None) == case["ok"]
    if found is not None:
        assert found.ref == case["value"]
        if "cmdline" in case:
            assert found.value == case["cmdline"]
        if "line" in case:
            assert found.line == case["line"]
