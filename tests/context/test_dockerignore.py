""".dockerignore: reading, matching and the skip test, against Docker's documented behaviour.

The tables are written from Docker's documentation and the behaviour of
moby's patternmatcher (the code Docker and BuildKit run), including its
shortcuts such as ``**.txt`` being a plain suffix test.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.context import BadPattern, IgnoreMatcher, find_ignore_file, load_ignore, parse_ignore_lines

# (file text, patterns after reading)
READING = [
    ("# comment\n*.md\n", ["*.md"]),
    ("  # not a comment: # only counts in column 1\n", ["# not a comment: # only counts in column 1"]),
    ("\n\n   \n\t\n", []),
    ("/abs\n./rel\ntrailing/\n//double//slash//\n", ["abs", "rel", "trailing", "double/slash"]),
    ("a/../b\n../outside\n/../../x\n", ["b", "../outside", "x"]),
    ("!keep\n! spaced \n!/rooted/\n", ["!keep", "!spaced", "!rooted"]),
    ("\ufeff*.log\n", ["*.log"]),  # UTF-8 BOM dropped
    ("a\r\nb\r\n", ["a", "b"]),  # CRLF files
    ("  padded  \n", ["padded"]),
    (".\n./\n/\n", [".", ".", "/"]),
    ("! /inverted/abs\n", ["!inverted/abs"]),
    ("!\n! \n", ["!", "!"]),  # kept, and then refused by the matcher
]


@pytest.mark.parametrize("text,patterns", READING)
def test_reading_an_ignore_file(text: str, patterns: list[str]) -> None:
    assert parse_ignore_lines(text) == patterns


# (pattern, path, ignored) for a file with just that one pattern.
SINGLE = [
    # plain names match at the top only, and everything below a match
    ("foo", "foo", True),
    ("foo", "foo/bar/baz", True),
    ("foo", "dir/foo", False),
    ("foo", "foobar", False),
    ("foo/bar", "foo/bar/x", True),
    ("foo/bar", "foo", False),
    # * and ? stay within one element
    ("*", "anything", True),
    ("*", "dir/below", True),  # the parent "dir" matches
    ("*.md", "README.md", True),
    ("*.md", "docs/README.md", False),
    ("*/*.md", "docs/README.md", True),
    ("*/*.md", "a/b/README.md", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("abc?def", "abc/def", False),
    (".*", ".foo", True),
    (".*", "foo", False),
    (".*", "dir/.hidden", False),
    # ** spans any number of elements, including none
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir", False),
    ("abc/**", "abc/def/ghi", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir", "a/b/dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/*.txt", "a/b/c/file.txt", True),
    ("**/*.txt", "file.txt2", False),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("foo/**/bar", "foo/bar", True),
    ("foo/**/bar", "foo/x/y/bar", True),
    ("foo/**/bar", "foo/x/y/barn", False),
    # moby's shortcuts: a leading ** followed by plain text is a suffix test,
    # a trailing ** after plain text is a prefix test
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**file", "dir/profile", True),
    ("**.txt", "a.txt", True),
    ("**.txt", "deep/down/a.txt", True),
    ("foo**", "foobar", True),
    ("foo**", "foo/bar", True),
    ("foo**", "fo", False),
    # character classes, as in Go's filepath.Match
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    ("a[^b-d]e", "ace", False),
    ("[a-c]*", "banana", True),
    ("[a-c]*", "date", False),
    # regex characters are literal
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    # backslash escapes the next character
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("\\[x\\]", "[x]", True),
    # cleaning: leading / and ./ and trailing / do not matter
    ("/foo", "foo", True),
    ("./foo", "foo/x", True),
    ("foo/", "foo/x", True),
    ("foo/./bar/../baz", "foo/baz", True),
    # a pattern that climbs out of the context matches nothing inside it
    ("../foo", "foo", False),
    ("..", "x", False),
    # spaces are part of names
    ("my file", "my file", True),
    ("my file", "my", False),
]


@pytest.mark.parametrize("pattern,path,ignored", SINGLE)
def test_one_pattern(pattern: str, path: str, ignored: bool) -> None:
    assert IgnoreMatcher.from_text(pattern + "\n").matches(path) is ignored


def test_later_lines_win_and_exceptions_re_include() -> None:
    m = IgnoreMatcher.from_text("*.md\n!README*.md\nREADME-secret.md\n")
    assert m.matches("CHANGES.md")
    assert not m.matches("README.md")
    assert not m.matches("README-guide.md")
    assert m.matches("README-secret.md")


def test_exception_re_includes_under_an_ignored_directory() -> None:
    m = IgnoreMatcher.from_text("node_modules\n!node_modules/keep\n")
    assert m.matches("node_modules")
    assert m.matches("node_modules/drop/x.js")
    assert not m.matches("node_modules/keep")
    assert not m.matches("node_modules/keep/deep/file")


def test_everything_but() -> None:
    m = IgnoreMatcher.from_text("*\n!src\n!Dockerfile\nsrc/**/*.tmp\n")
    assert m.matches("docs/x")
    assert not m.matches("Dockerfile")
    assert not m.matches("src/main.c")
    assert m.matches("src/a/b/c.tmp")
    assert m.matches("src/c.tmp")


def test_exception_before_the_rule_does_nothing() -> None:
    m = IgnoreMatcher.from_text("!keep.txt\n*.txt\n")
    assert m.matches("keep.txt")


def test_the_context_root_is_never_ignored() -> None:
    m = IgnoreMatcher.from_text("*\n**\n.\n")
    assert not m.matches(".")
    assert not m.matches("")


def test_parent_results_are_reused_like_buildkit() -> None:
    # BuildKit (MatchesUsingParentResults) does not re-try a pattern on the
    # parents of a path when the parent's own walk skipped it: here "d" at
    # line 3 was skipped for "d" (already ignored), so for "d/f" only "d/f"
    # itself is tried and the exception on line 2 stands. Docker's legacy
    # builder (MatchesOrParentMatches) would ignore "d/f"; BuildKit sends it.
    m = IgnoreMatcher.from_text("d\n!d/f\nd\n")
    assert m.matches("d")
    assert not m.matches("d/f")


@pytest.mark.parametrize("line", ["!", "[", "a[", "[]", "x\\", "[z-a]"])
def test_bad_patterns_are_one_line_errors(line: str) -> None:
    with pytest.raises(BadPattern) as info:
        IgnoreMatcher.from_text(line + "\n")
    assert "\n" not in str(info.value)


def test_skip_test_only_for_directories_with_nothing_re_included() -> None:
    m = IgnoreMatcher.from_text("node_modules\n!node_modules/keep\nbuild\n*.log\n!important.log\n")
    assert not m.can_skip_dir("node_modules", m.info_for("node_modules")[1])
    assert m.can_skip_dir("build", m.info_for("build")[1])
    # an exception with ** could match anywhere below
    m = IgnoreMatcher.from_text("vendor\n!**/LICENSE\n")
    assert not m.can_skip_dir("vendor", m.info_for("vendor")[1])
    m = IgnoreMatcher.from_text("vendor\n!src/*.go\n")
    assert m.can_skip_dir("vendor", m.info_for("vendor")[1])
    assert m.skippable("vendor") and m.skippable("/vendor/") and not m.skippable("src")


# Random patterns over a small alphabet: whenever the skip test says a
# directory can be skipped, every path below it must really be ignored.
_ELEMENT = st.sampled_from(["a", "b", "*", "?", "**", "a*", "[ab]", "c"])
_PATTERN = st.builds(
    lambda neg, parts: ("!" if neg else "") + "/".join(parts),
    st.booleans(), st.lists(_ELEMENT, min_size=1, max_size=4),
)
_PATHS = ["/".join(p) for n in range(1, 5) for p in __import__("itertools").product("abc", repeat=n)]


@settings(max_examples=300, deadline=None)
@given(st.lists(_PATTERN, min_size=1, max_size=5))
def test_skip_test_is_sound(patterns: list[str]) -> None:
    m = IgnoreMatcher.from_lines(patterns)
    for d in _PATHS:
        if d.count("/") >= 2:
            continue
        ignored, info = m.info_for(d)
        if ignored and m.can_skip_dir(d, info):
            below = [p for p in _PATHS if p.startswith(d + "/")]
            assert all(m.matches(p) for p in below), (patterns, d)


def test_matches_agrees_with_step_by_step_walk() -> None:
    rng = random.Random(5)
    m = IgnoreMatcher.from_text("a\n!a/b\n**/c\n!**/c/keep\nb*/**\n")
    for _ in range(300):
        parts = [rng.choice(["a", "b", "c", "keep", "bx"]) for _ in range(rng.randint(1, 4))]
        info = 0
        for depth in range(1, len(parts) + 1):
            ignored, info = m.match_step("/".join(parts[:depth]), info)
        assert m.matches("/".join(parts)) is ignored


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.md\n")
    (tmp_path / "build").mkdir()
    dockerfile = tmp_path / "build" / "app.Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    assert find_ignore_file(tmp_path, dockerfile) == tmp_path / ".dockerignore"
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("*.txt\n")
    assert find_ignore_file(tmp_path, dockerfile) == tmp_path / "build" / "app.Dockerfile.dockerignore"
    m = load_ignore(tmp_path, dockerfile)
    assert m.matches("a.txt") and not m.matches("a.md")
    # without a named Dockerfile only the context's file counts
    assert load_ignore(tmp_path).matches("a.md")


def test_no_ignore_file_ignores_nothing(tmp_path: Path) -> None:
    m = load_ignore(tmp_path)
    assert not m and not m.matches("anything")
