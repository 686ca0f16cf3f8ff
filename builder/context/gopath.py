"""Go's path rules, as Docker applies them: ``filepath.Clean`` and ``filepath.Match``.

Docker cleans COPY sources and .dockerignore lines with Go's ``filepath.Clean``
and matches wildcards with ``filepath.Match``; Python's ``posixpath.normpath``
and ``fnmatch`` differ in small ways (``//x``, ``[!...]``, escapes), so the two
Go functions are re-expressed here.
"""
from __future__ import annotations

import re
from functools import lru_cache

from builder.context.errors import BadPattern


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: the shortest equivalent path, ``.`` for empty."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            # ".." at the root stays at the root
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def contains_wildcards(name: str) -> bool:
    """True if ``name`` has an unescaped ``*``, ``?`` or ``[`` (BuildKit's test)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def unescape(name: str) -> str:
    """Drop ``\\`` escapes the way ``filepath.Match`` reads a literal."""
    return re.sub(r"\\(.)", r"\1", name, flags=re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a ``[...]`` class (Go's getEsc): returns it and the next index."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise BadPattern(f"syntax error in pattern: {pattern!r}")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPattern(f"syntax error in pattern: {pattern!r}")
    return pattern[i], i + 1


def translate(pattern: str) -> str:
    """A regular expression equivalent to ``filepath.Match(pattern, ...)``.

    Raises ``BadPattern`` where Go returns ``ErrBadPattern`` (empty or
    unclosed class, a range bound that is ``-`` or ``]``, a trailing ``\\``).
    A ``[...]`` class may hold ``/``: Go matches it against one character.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "\\":
            if i + 1 >= n:
                raise BadPattern(f"syntax error in pattern: {pattern!r}")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif ch == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            ranges: list[str] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                if lo <= hi:  # Go accepts a reversed range; it matches nothing
                    ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
                else:
                    ranges.append("")
            body = "".join(ranges)
            if body:
                out.append(("[^" if negate else "[") + body + "]")
            else:
                out.append("(?s:.)" if negate else "(?!)")
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def compile_match(pattern: str) -> re.Pattern[str]:
    """``filepath.Match`` as a compiled regex; use ``.fullmatch(name)``."""
    return re.compile(translate(pattern), re.DOTALL)


def go_match(pattern: str, name: str) -> bool:
    """``filepath.Match(pattern, name)``."""
    return compile_match(pattern).fullmatch(name) is not None
