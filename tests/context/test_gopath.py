"""Go's path.Clean and filepath.Match, which COPY sources and .dockerignore rely on.

Cases follow the documented behaviour of Go's ``path`` and ``path/filepath``.
"""
from __future__ import annotations

import pytest

from builder.context.errors import BadPattern
from builder.context.gopath import contains_wildcards, go_clean, go_match, unescape

CLEAN = [
    ("", "."), (".", "."), ("/", "/"), ("//", "/"), ("//a//b/", "/a/b"), ("a/./b", "a/b"),
    ("a/../b", "b"), ("a/..", "."), ("../a", "../a"), ("../../a/../b", "../../b"),
    ("/..", "/"), ("/../../etc/passwd", "/etc/passwd"), ("/a/b/../../../c", "/c"),
    ("abc/def/", "abc/def"), ("./", "."), ("a/b/c/../../..", "."),
]


@pytest.mark.parametrize("path,cleaned", CLEAN)
def test_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned


MATCH = [
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True),
    ("a*", "abc", True), ("a*", "ab/c", False), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False), ("ab[c]", "abc", True), ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False), ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True), ("a\\*b", "a*b", True), ("a\\*b", "ab", False), ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True), ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True), ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "-", True),
    ("[x\\-]", "z", False), ("[\\-x]", "x", True), ("[\\-x]", "a", False), ("*x", "xxx", True),
    ("[z-a]", "m", False), (".*", ".hidden", True), ("*", ".hidden", True),
]


@pytest.mark.parametrize("pattern,name,matched", MATCH)
def test_match(pattern: str, name: str, matched: bool) -> None:
    assert go_match(pattern, name) is matched


@pytest.mark.parametrize("pattern", ["[]a]", "[-]", "[x-]", "[a-b-c]", "[", "[^", "[^bc", "a[", "\\", "[\\"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(BadPattern):
        go_match(pattern, "a")


def test_wildcard_detection_respects_escapes() -> None:
    assert contains_wildcards("src/*.py")
    assert contains_wildcards("file[0-9]")
    assert not contains_wildcards("plain/path.txt")
    assert not contains_wildcards("a\\*b")
    assert unescape("a\\*b\\\\c") == "a*b\\c"
