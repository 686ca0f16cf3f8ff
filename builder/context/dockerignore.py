"""``.dockerignore``: reading the file and matching paths exactly as Docker does.

Reading follows moby's ``ignorefile.ReadAll``: a UTF-8 BOM is dropped, a line
whose first character is ``#`` is a comment (only at column 1), surrounding
white space is trimmed, blank lines are skipped, ``!`` marks an exception,
each pattern is cleaned with Go's ``filepath.Clean`` and a leading ``/`` is
dropped (so ``/a``, ``./a`` and ``a/`` are all ``a``).

Matching follows moby's ``patternmatcher`` as BuildKit's file sender uses it
(``MatchesUsingParentResults``): patterns are tried in order, the last one
that applies wins; a pattern applies to a path if it matches the path or
matched one of its parent directories; ``*`` and ``?`` stay within one path
element, ``**`` spans any number of them, ``[...]`` and ``\\`` escapes work
as in ``filepath.Match``.
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from builder.context.errors import BadPattern, ContextError
from builder.context.gopath import go_clean, translate

# Characters that mean something to a regex but nothing to filepath.Match.
_REGEX_ONLY = set(".+()|{}$")


def parse_ignore_lines(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` text, in order (``!`` kept as a prefix)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns: list[str] = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def _pattern_regex(pattern: str) -> tuple[str, str]:
    """moby's ``Pattern.compile`` for ``/`` separators: (match kind, regex).

    The kind is moby's shortcut: ``exact`` (plain text), ``prefix`` (plain
    text then a final ``**``), ``suffix`` (a leading ``**`` then plain text) or
    ``regexp``. The shortcuts are not always what the regex would say
    (``**.txt`` is a plain suffix test, so it matches ``a.txt``), and Docker
    uses the shortcuts, so they are kept.
    """
    out = ["^"]
    kind = "exact"
    i, n, step = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":  # "**/" is "**"
                    i += 1
                if i >= n:  # a final "**" matches everything below
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regexp"
                else:  # elsewhere, any number of path elements
                    out.append("(.*/)?")
                    kind = "regexp"
                if step == 0:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regexp"
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in _REGEX_ONLY:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
                kind = "regexp"
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = "regexp"
        else:
            # "^" and "-" go through as they are, as in moby (regex syntax there)
            out.append(ch if ch in "^-" else re.escape(ch))
        step += 1
    out.append("$")
    return kind, "".join(out)


def _compile(text: str) -> Callable[[str], bool]:
    """The match function moby would use for the cleaned pattern ``text``."""
    kind, regex = _pattern_regex(text)
    if kind == "exact":
        return text.__eq__
    if kind == "prefix":
        return partial(_has_prefix, text[:-2])
    if kind == "suffix":
        return partial(_has_suffix, text[2:])
    with warnings.catch_warnings():
        # "[[" is a nested-set warning in Python; Go reads it as moby intends.
        warnings.simplefilter("ignore", FutureWarning)
        compiled = re.compile(regex, re.DOTALL)
    return lambda path: compiled.match(path) is not None


def _has_prefix(prefix: str, path: str) -> bool:
    return path.startswith(prefix)


def _has_suffix(suffix: str, path: str) -> bool:
    # "**/foo" also matches "foo" itself
    return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])


@dataclass(frozen=True)
class IgnorePattern:
    """One cleaned pattern; ``exception`` for a ``!`` line."""

    text: str
    exception: bool
    matcher: Callable[[str], bool] = field(compare=False, repr=False)
    # For the quick test: the regex of each path element, None where "**" spans elements.
    elements: tuple[re.Pattern[str] | None, ...] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, line: str) -> "IgnorePattern":
        text = go_clean(line.strip())
        exception = text.startswith("!")
        if exception:
            if len(text) == 1:
                raise BadPattern('illegal exclusion pattern: "!" in .dockerignore')
            text = text[1:]
        try:
            translate(text)  # Go validates the whole pattern with filepath.Match
        except BadPattern:
            raise BadPattern(f"bad .dockerignore pattern {line!r}: syntax error in pattern") from None
        try:
            matcher = _compile(text)
        except re.error as exc:
            raise BadPattern(f"bad .dockerignore pattern {line!r}: {exc}") from None
        return cls(text, exception, matcher, _element_regexes(text))

    def match(self, path: str) -> bool:
        return self.matcher(path)

    def could_match_below(self, dir_parts: list[str]) -> bool:
        """Whether some path strictly under the directory could match (never a false no)."""
        if len(self.elements) <= len(dir_parts):
            # Matches no deeper path unless "**" is involved.
            return any(e is None for e in self.elements)
        for element, part in zip(self.elements, dir_parts):
            if element is None:
                return True
            if element.match(part) is None:
                return False
        return True


def _element_regexes(text: str) -> tuple[re.Pattern[str] | None, ...]:
    """A regex per path element; None where an element cannot be judged alone
    ("**" spans elements, a class or escape split by "/")."""
    elements: list[re.Pattern[str] | None] = []
    for part in text.split("/"):
        if "**" in part:
            elements.append(None)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                elements.append(re.compile(_pattern_regex(part)[1], re.DOTALL))
        except re.error:
            elements.append(None)
    return tuple(elements)


# What a walk carries from a directory to its children: for each pattern,
# whether it matched the directory or one of its parents (a bit per pattern).
MatchInfo = int


@dataclass
class IgnoreMatcher:
    """The ordered patterns of one ``.dockerignore``."""

    patterns: list[IgnorePattern] = field(default_factory=list)
    source: str | None = None  # the file the patterns came from, for messages

    @classmethod
    def from_lines(cls, lines: list[str], source: str | None = None) -> "IgnoreMatcher":
        patterns = [IgnorePattern.parse(line) for line in lines if line.strip()]
        return cls(patterns, source)

    @classmethod
    def from_text(cls, text: str, source: str | None = None) -> "IgnoreMatcher":
        return cls.from_lines(parse_ignore_lines(text), source)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    @property
    def has_exceptions(self) -> bool:
        return any(p.exception for p in self.patterns)

    def match_step(self, relpath: str, parent: MatchInfo = 0) -> tuple[bool, MatchInfo]:
        """Whether ``relpath`` is ignored, given its parent's ``MatchInfo``.

        ``MatchesUsingParentResults``: a pattern that matched a parent applies
        without being tried again; one that did not is tried on the path
        itself, and only when it could change the outcome so far.
        """
        matched = False
        info = 0
        for i, pattern in enumerate(self.patterns):
            bit = 1 << i
            if parent & bit:
                hit = True
            elif pattern.exception != matched:
                continue
            else:
                hit = pattern.matcher(relpath)
            if hit:
                info |= bit
                matched = not pattern.exception
        return matched, info

    def info_for(self, relpath: str) -> tuple[bool, MatchInfo]:
        """``match_step`` for a path given from the top: walks down its parents."""
        parts = [p for p in relpath.split("/") if p]
        info: MatchInfo = 0
        matched = False
        for depth in range(1, len(parts) + 1):
            matched, info = self.match_step("/".join(parts[:depth]), info)
        return matched, info

    def matches(self, relpath: str) -> bool:
        """True if ``relpath`` (relative to the context, ``/``-separated) is ignored."""
        cleaned = go_clean(relpath.lstrip("/"))
        if cleaned in (".", ""):
            return False  # the context root itself is never ignored
        return self.info_for(cleaned)[0]

    def skippable(self, relpath: str) -> bool:
        """True if the directory ``relpath`` and everything under it is ignored."""
        ignored, info = self.info_for(go_clean(relpath.lstrip("/")))
        return ignored and self.can_skip_dir(go_clean(relpath.lstrip("/")), info)

    def can_skip_dir(self, relpath: str, info: MatchInfo) -> bool:
        """True if the ignored directory ``relpath`` has nothing re-included under it.

        Every path below an ignored directory is ignored too unless an
        exception that did not already match the directory (or a parent)
        could match something below it.
        """
        parts = relpath.split("/")
        for i, pattern in enumerate(self.patterns):
            if pattern.exception and not info & (1 << i) and pattern.could_match_below(parts):
                return False
        return True


def find_ignore_file(context_dir: Path, dockerfile: Path | None = None) -> Path | None:
    """The ignore file that applies: ``<Dockerfile>.dockerignore`` beside the
    Dockerfile first, then ``<context>/.dockerignore``; None if neither exists.

    Each is looked up inside its own directory as if that were ``/`` (BuildKit reads them
    from the Dockerfile's and the context's file trees): a symlink pointing out of it
    does not lead anywhere, so no file outside the context is ever read as an ignore file.
    Only a regular file counts (a FIFO would block the build).
    """
    if dockerfile is not None:
        beside = _regular_inside(dockerfile.parent, dockerfile.name + ".dockerignore")
        if beside is not None:
            return beside
    return _regular_inside(context_dir, ".dockerignore")


def _regular_inside(directory: Path, name: str) -> Path | None:
    from builder.context.scoped import NotInRoot, resolve

    try:
        found = resolve(str(directory), [name], follow_last=True)
    except (NotInRoot, ContextError, OSError):
        return None
    if not stat.S_ISREG(found.st.st_mode):
        return None
    return Path(directory, *found.parts)


def load_ignore(context_dir: Path, dockerfile: Path | None = None) -> IgnoreMatcher:
    """The matcher for a context directory (empty if there is no ignore file)."""
    path = find_ignore_file(context_dir, dockerfile)
    if path is None:
        return IgnoreMatcher()
    try:
        # Resolved above to a regular file; opened without following a link swapped in since.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ContextError(f"{path} changed while being read; build again")
            text = fh.read().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ContextError(f"cannot read {path}: {exc.strerror or exc}") from None
    return IgnoreMatcher.from_text(text, str(path))
