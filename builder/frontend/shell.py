"""BuildKit's shell-word lexer: quote removal and ``$VAR`` / ``${VAR...}`` expansion.

This is the expansion that ARG, ENV, COPY, WORKDIR, USER, LABEL, FROM and the
other non-RUN instructions go through. It follows BuildKit's
``frontend/dockerfile/shell/lex.go`` rule for rule, including its quirks,
because a Dockerfile must mean the same thing here as under ``docker build``:

* single quotes keep everything literal; double quotes expand ``$`` and let
  the escape character escape only ``"``, ``$`` and itself;
* outside quotes the escape character escapes anything; a trailing one is
  dropped;
* ``$name`` where a name is letters/digits/``_``, or a run of digits
  (positional, never set), or one special parameter (``@*#?-$!0``, never set
  unless the env has it); ``$`` followed by anything else stays ``$``;
* ``${v}``, ``${v-w}``, ``${v:-w}``, ``${v+w}``, ``${v:+w}``, ``${v?m}``,
  ``${v:?m}``, ``${v#p}``, ``${v##p}``, ``${v%p}``, ``${v%%p}``, ``${v/p/r}``,
  ``${v//p/r}``; words are expanded recursively. Patterns are globs with
  ``*`` and ``?`` and ``\\`` escapes; like BuildKit, ``[...]`` is *not* a
  bracket expression but literal text.

A word with nothing to process (no ``$``, quote or escape character) is
returned without a character-by-character scan: this runs for every word of
every build.

Two deliberate differences, neither changing what a word expands to:

* revisions of BuildKit's lexer that share one words buffer between nested
  scans split ``ab${X:-c}d`` into ``["cd"]``, losing ``ab``; here the words
  keep their text (``["abcd"]``);
* Go's regexp engine is linear-time and Python's backtracks, so a pattern with
  several stars against a long value switches to a linear-time matcher with
  the same leftmost-first semantics (see ``_Glob``).
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from builder.errors import PybuildError

__all__ = ["ExpansionError", "Lexer", "envs_from_list"]


class ExpansionError(PybuildError):
    """A word that cannot be expanded: bad ``${}`` syntax, an unterminated
    quote, a ``${VAR:?message}`` whose variable is unset, a bad pattern."""

    def __init__(self, reason: str, word: str) -> None:
        self.reason = reason
        self.word = word
        super().__init__(f"failed to process {_quote_for_message(word)}: {_one_line(reason)}")


# Control characters shown as escapes, so a message is always one line.
_CONTROL_ESCAPES = {c: json.dumps(chr(c))[1:-1] for c in [*range(32), 127]}


def _one_line(text: str, limit: int = 300) -> str:
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.translate(_CONTROL_ESCAPES)


def _quote_for_message(word: str, limit: int = 200) -> str:
    # One line whatever the word holds (newlines, control characters), and
    # bounded, so an absurd word cannot flood the terminal.
    if len(word) > limit:
        word = word[:limit] + "…"
    return json.dumps(word, ensure_ascii=False)


class _Fail(Exception):
    """Internal: an expansion failure before the word is attached."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Go's unicode.IsSpace: what splits unquoted text into words.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPLIT = re.compile(f"[{_GO_SPACE}]+")
# Blanks that may follow a heredoc operator `<<` and stay glued to it.
_HEREDOC_BLANKS = re.compile(r"[\t\r ]*")
# A name made of ASCII word characters: the common case, checked by regex.
_ASCII_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_BOM = "\ufeff"
_EOF = ""
# Nesting deeper than this is certainly not a real Dockerfile; refusing it
# keeps hostile input from exhausting the interpreter stack.
_MAX_DEPTH = 100


def _is_name_char(ch: str) -> bool:
    """Go's unicode.IsLetter || unicode.IsDigit || '_'."""
    return ch == "_" or ch.isalpha() or ch.isdecimal()


def _split_words(text: str) -> list[str]:
    return [w for w in _SPLIT.split(text) if w]


@functools.lru_cache(maxsize=16)
def _special_chars(escape: str, quotes: bool, stop: str, heredoc: bool) -> re.Pattern[str]:
    """A regex finding the next character the scanner must look at."""
    chars = "$" + escape + ("'\"" if quotes else "") + ("<" if heredoc else "") + stop
    return re.compile("[" + re.escape(chars) + "]")


@functools.lru_cache(maxsize=8)
def _double_quote_specials(escape: str) -> re.Pattern[str]:
    return re.compile("[" + re.escape('"$' + escape) + "]")


@dataclass(frozen=True)
class Lexer:
    """Expands Dockerfile words the way BuildKit's ``shell.Lex`` does.

    >>> Lexer().process_word("${VERSION:-1.0}-$ARCH", {"ARCH": "arm64"})
    '1.0-arm64'
    >>> Lexer().process_words('a "b c" $X', {"X": "d  e"})
    ['a', 'b c', 'd', 'e']
    """

    escape: str = "\\"  # the Dockerfile escape token: "\\" or "`"
    raw_quotes: bool = False  # keep quote characters in the result
    raw_escapes: bool = False  # keep escape characters in the result
    skip_process_quotes: bool = False  # quotes are ordinary characters
    skip_unset_env: bool = False  # leave $unset / ${unset...} as written
    _plain_check: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _finders: dict[tuple[str, bool], re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.escape not in ("\\", "`"):
            raise ValueError(f"escape must be '\\' or '`', not {self.escape!r}")
        triggers = ("$", self.escape) if self.skip_process_quotes else ("$", self.escape, "'", '"')
        object.__setattr__(self, "_plain_check", triggers)
        quotes = not self.skip_process_quotes
        finders = {(stop, heredoc): _special_chars(self.escape, quotes, stop, heredoc)
                   for stop in (_EOF, "}", "/") for heredoc in (False, True)}
        object.__setattr__(self, "_finders", finders)

    # --- public API -----------------------------------------------------------

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """The word with quotes removed and variables expanded (no splitting)."""
        if self._is_plain(word):
            return word
        return self._run(word, env, heredoc=False).result()

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand, then split on unquoted whitespace (BuildKit's ProcessWords).

        Whitespace that comes from an unquoted expansion splits too; quoted or
        escaped whitespace does not. Empty words are dropped.
        """
        if self._is_plain(word) and "<" not in word:
            return _split_words(word)
        return self._run(word, env, heredoc=True).words()

    def process_word_with_matches(
        self, word: str, env: Mapping[str, str]
    ) -> tuple[str, frozenset[str], frozenset[str]]:
        """``(result, names referenced and set, names referenced but unset)``.

        A name set to ``""`` counts as set.
        """
        if self._is_plain(word):
            return word, frozenset(), frozenset()
        scan = self._run(word, env, heredoc=False)
        return scan.result(), frozenset(scan.matched), frozenset(scan.unmatched)

    # --- internals ------------------------------------------------------------

    def _is_plain(self, word: str) -> bool:
        for ch in self._plain_check:
            if ch in word:
                return False
        # Go's text/scanner drops a byte-order mark at the start of its input.
        return not word.startswith(_BOM)

    def _run(self, word: str, env: Mapping[str, str], heredoc: bool) -> _Scan:
        scan = _Scan(self, word, env, heredoc)
        try:
            scan.run()
        except _Fail as exc:
            raise ExpansionError(exc.reason, word) from None
        return scan


class _Scan:
    """One pass over one word; ``segments`` collect the top-level output.

    Each segment is ``(text, splittable)``: unquoted literal text and the
    results of ``$`` expansions split into words, quoted or escaped text does
    not (BuildKit's addString vs addRawString).
    """

    __slots__ = ("lexer", "text", "end", "pos", "env", "raw_escapes", "heredoc",
                 "matched", "unmatched", "segments", "depth")

    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str], heredoc: bool) -> None:
        self.lexer = lexer
        self.text = text
        self.end = len(text)
        self.pos = 1 if text.startswith(_BOM) else 0
        self.env = env
        self.raw_escapes = lexer.raw_escapes
        self.heredoc = heredoc
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.segments: list[tuple[str, bool]] = []
        self.depth = 0

    def run(self) -> None:
        self.segments = self.until(_EOF, self.lexer.raw_escapes)

    def result(self) -> str:
        return "".join([text for text, _ in self.segments])

    def words(self) -> list[str]:
        words: list[str] = []
        current = ""
        for text, splittable in self.segments:
            if not splittable:
                current += text
                continue
            parts = _SPLIT.split(text)
            current += parts[0]
            for part in parts[1:]:
                if current:
                    words.append(current)
                current = part
        if current:
            words.append(current)
        return words

    # --- the scanner ----------------------------------------------------------

    def until(self, stop: str, raw_escapes: bool) -> list[tuple[str, bool]]:
        """Process up to ``stop`` (consumed) or the end of the word if ``stop`` is EOF."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        lexer, text, end = self.lexer, self.text, self.end
        escape = lexer.escape
        finder = lexer._finders[stop, self.heredoc]
        out: list[tuple[str, bool]] = []
        pos = self.pos
        while pos < end:
            m = finder.search(text, pos)
            if m is None:
                out.append((text[pos:], True))
                pos = end
                break
            i = m.start()
            if i > pos:
                out.append((text[pos:i], True))
            ch = text[i]
            if ch == stop:
                self.pos = i + 1
                self.raw_escapes = saved
                return out
            if ch == "$":
                self.pos = i
                out.append((self.dollar(), True))
                pos = self.pos
            elif ch == "'":
                pos = self.single_quote(i, out)
            elif ch == '"':
                self.pos = i
                out.append((self.double_quote(), False))
                pos = self.pos
            elif ch == "<":
                pos = self.maybe_heredoc(i, out)
            else:  # the escape character
                if self.raw_escapes:
                    out.append((escape, False))
                if i + 1 >= end:  # a trailing escape is dropped
                    pos = end
                    break
                out.append((text[i + 1], False))
                pos = i + 2
        self.pos = pos
        self.raw_escapes = saved
        if stop:
            raise _Fail(f"unexpected end of statement while looking for matching {stop}")
        return out

    def single_quote(self, i: int, out: list[tuple[str, bool]]) -> int:
        close = self.text.find("'", i + 1)
        if close < 0:
            self.pos = self.end
            raise _Fail("unexpected end of statement while looking for matching single-quote")
        if self.lexer.raw_quotes:
            out.append((self.text[i:close + 1], False))
        else:
            out.append((self.text[i + 1:close], False))
        return close + 1

    def double_quote(self) -> str:
        text, end, escape = self.text, self.end, self.lexer.escape
        raw_quotes = self.lexer.raw_quotes
        finder = _double_quote_specials(escape)
        parts: list[str] = ['"'] if raw_quotes else []
        pos = self.pos + 1
        while True:
            m = finder.search(text, pos)
            if m is None:
                self.pos = end
                raise _Fail("unexpected end of statement while looking for matching double-quote")
            j = m.start()
            if j > pos:
                parts.append(text[pos:j])
            ch = text[j]
            if ch == '"':
                if raw_quotes:
                    parts.append('"')
                self.pos = j + 1
                return "".join(parts)
            if ch == "$":
                self.pos = j
                parts.append(self.dollar())
                pos = self.pos
                continue
            # The escape character: it escapes only `"`, `$` and itself; before
            # anything else it stays. With raw escapes BuildKit then writes it
            # twice, and so do we.
            if self.raw_escapes:
                parts.append(escape)
            if j + 1 < end and text[j + 1] in ('"', "$", escape):
                parts.append(text[j + 1])
                pos = j + 2
            elif j + 1 < end:
                parts.append(escape)
                pos = j + 1
            else:
                pos = j + 1  # at the end: the quote is unterminated, reported above

    def maybe_heredoc(self, i: int, out: list[tuple[str, bool]]) -> int:
        """``<<`` and the blanks after it stay one word, so ``<< EOF`` is one heredoc word."""
        text = self.text
        if i + 1 >= self.end or text[i + 1] != "<":
            out.append(("<", False))
            return i + 1
        blanks_end = _HEREDOC_BLANKS.match(text, i + 2).end()
        out.append((text[i:blanks_end], False))
        return blanks_end

    def name(self) -> str:
        """A variable name at ``self.pos`` (possibly empty), consumed."""
        text, pos, end = self.text, self.pos, self.end
        if pos >= end:
            return ""
        first = text[pos]
        if first.isdecimal():  # positional: all the digits
            stop = pos + 1
            while stop < end and text[stop].isdecimal():
                stop += 1
            self.pos = stop
            return text[pos:stop]
        if first in _SPECIAL_PARAMS:
            self.pos = pos + 1
            return first
        m = _ASCII_NAME.match(text, pos)
        stop = m.end() if m else pos
        if stop < end and ord(text[stop]) > 127 or m is None and _is_name_char(first):
            while stop < end and _is_name_char(text[stop]):
                stop += 1
        self.pos = stop
        return text[pos:stop]

    def lookup(self, name: str) -> tuple[str, bool]:
        env = self.env
        if name in env:
            self.matched.add(name)
            return env[name], True
        self.unmatched.add(name)
        return "", False

    def next_char(self) -> str:
        if self.pos >= self.end:
            return _EOF
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def nested(self, stop: str, raw_escapes: bool, missing: str) -> str:
        """A sub-word of ``${...}`` up to ``stop``; at the end of input, ``missing`` is the error."""
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Fail(f"expansions nested more than {_MAX_DEPTH} levels deep")
        try:
            return "".join([text for text, _ in self.until(stop, raw_escapes)])
        except _Fail:
            if self.pos >= self.end:
                raise _Fail(missing) from None
            raise
        finally:
            self.depth -= 1

    def dollar(self) -> str:
        """Expand the ``$`` at ``self.pos``."""
        skip_unset = self.lexer.skip_unset_env
        self.pos += 1
        if self.pos >= self.end or self.text[self.pos] != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and skip_unset:
                return "$" + name
            return value

        self.pos += 1
        if self.pos >= self.end:
            raise _Fail("syntax error: missing '}'")
        if self.text[self.pos] in "{}:":
            raise _Fail("syntax error: bad substitution")
        name = self.name()
        op = self.next_char()
        if op == "}":
            value, found = self.lookup(name)
            if not found and skip_unset:
                return "${" + name + "}"
            return value
        if op == _EOF:
            raise _Fail("syntax error: missing '}'")
        if op == "/":
            return self.replace(name)
        if op not in ":+-?#%":
            raise _Fail(f"unsupported modifier ({op}) in substitution")

        null_is_unset = op == ":"
        modifier = op
        if null_is_unset:
            # BuildKit takes whatever follows the colon as the modifier.
            modifier = self.next_char()
            op += modifier
            if modifier in ("#", "%"):
                raise _Fail(f"unsupported modifier ({op}) in substitution")
        raw = modifier in ("#", "%")
        word = self.nested("}", raw, "syntax error: missing '}'")
        value, found = self.lookup(name)
        if not found and skip_unset:
            return "${" + name + op + word + "}"
        empty = not found or (null_is_unset and value == "")
        if modifier == "-":
            return word if empty else value
        if modifier == "+":
            return "" if empty else word
        if modifier == "?":
            if not found:
                raise _Fail(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Fail(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if modifier == "#":
            greedy = word.startswith("#")
            return _trim_prefix(word[1:] if greedy else word, value, greedy)
        if modifier == "%":
            greedy = word.startswith("%")
            return _trim_suffix(word[1:] if greedy else word, value, greedy)
        raise _Fail(f"unsupported modifier ({op}) in substitution")

    def replace(self, name: str) -> str:
        """``${name/pattern/replacement}`` and ``${name//pattern/replacement}``."""
        replace_all = self.pos < self.end and self.text[self.pos] == "/"
        if replace_all:
            self.pos += 1
        pattern = self.nested("/", True, "syntax error: missing '/' in ${}")
        replacement = self.nested("}", True, "syntax error: missing '}'")
        value, found = self.lookup(name)
        if not found and self.lexer.skip_unset_env:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        glob = _compile_glob(pattern, True)
        if replace_all:
            return _replace_all(glob, value, replacement)
        return _replace_first(glob, value, replacement)


def envs_from_list(entries: Iterable[str]) -> dict[str, str]:
    """An env mapping from ``NAME=value`` entries (an image config's ``Env``).

    An entry without ``=`` sets the name to ``""``; the last assignment of a
    name wins (BuildKit's EnvsFromSlice).
    """
    env: dict[str, str] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        env[name] = value
    return env


# --- glob patterns ------------------------------------------------------------


# Atoms of a compiled glob besides literal characters (which are str, so never equal).
_ANY = 0  # `?`: one character other than a newline (Go's `.`)
_STAR = 1  # `*`: any run of characters other than newlines
# Python's regex engine backtracks: a pattern with k stars can take about
# len(value) ** k steps (Go's engine is linear). Within this budget the regex
# is used; beyond it, a linear-time matcher with the same leftmost-first
# semantics, so a hostile pattern or value cannot stall a build.
_BACKTRACK_BUDGET = 1_000_000


@dataclass(frozen=True)
class _Glob:
    """A compiled glob pattern: ``*``, ``?`` and ``\\`` escapes, nothing else special.

    All stars are greedy (longest) or all are lazy (shortest), as in BuildKit.
    """

    regex: re.Pattern[str]
    atoms: tuple[str | int, ...]
    greedy: bool
    stars: int

    def match_end(self, value: str) -> int | None:
        """Where a match anchored at the start of ``value`` ends."""
        if self._cheap(len(value), 0):
            m = self.regex.match(value)
            return m.end() if m else None
        span = self._linear(value, 0, anchored=True)
        return span[1] if span else None

    def search(self, value: str, pos: int = 0) -> tuple[int, int] | None:
        """The leftmost match at or after ``pos``."""
        if self._cheap(len(value) - pos, 1):
            m = self.regex.search(value, pos)
            return m.span() if m else None
        return self._linear(value, pos, anchored=False)

    def _cheap(self, length: int, extra: int) -> bool:
        if self.stars == 0:
            return True
        power = self.stars + extra
        return power <= 8 and max(length, 1) ** power <= _BACKTRACK_BUDGET

    def _linear(self, value: str, start: int, anchored: bool) -> tuple[int, int] | None:
        """A Pike VM: threads in priority order, one step per character.

        A thread is (atom index, where its match started); reaching the end
        of the atoms is a match, and it cuts off every lower-priority thread.
        """
        atoms, greedy, final = self.atoms, self.greedy, len(self.atoms)

        def add(state: int, origin: int, threads: list[tuple[int, int]], seen: set[int]) -> None:
            if state in seen:
                return
            seen.add(state)
            if state < final and atoms[state] == _STAR:
                if greedy:  # another character for the star first, then what follows
                    threads.append((state, origin))
                    add(state + 1, origin, threads, seen)
                else:
                    add(state + 1, origin, threads, seen)
                    threads.append((state, origin))
            else:
                threads.append((state, origin))

        threads: list[tuple[int, int]] = []
        seen: set[int] = set()
        add(0, start, threads, seen)
        found: tuple[int, int] | None = None
        end = len(value)
        i = start
        while threads:
            ch = value[i] if i < end else None
            following: list[tuple[int, int]] = []
            following_seen: set[int] = set()
            for state, origin in threads:
                if state == final:
                    found = (origin, i)
                    break
                if ch is None:
                    continue
                atom = atoms[state]
                if isinstance(atom, str):
                    if atom == ch:
                        add(state + 1, origin, following, following_seen)
                elif ch != "\n":
                    add(state if atom == _STAR else state + 1, origin, following, following_seen)
            if ch is None:
                break
            i += 1
            if found is None and not anchored:  # a new start, lowest priority
                add(0, i, following, following_seen)
            threads = following
        return found


@functools.lru_cache(maxsize=256)
def _compile_glob(pattern: str, greedy: bool) -> _Glob:
    """``\\}`` and ``\\/`` mean the bare character (the escape only kept it from
    ending the ``${}``); any other escape must be of ``*``, ``?`` or ``\\``.
    """
    star = ".*" if greedy else ".*?"
    parts: list[str] = []
    atoms: list[str | int] = []
    i, end = 0, len(pattern)
    if pattern.startswith(_BOM):  # Go's scanner skips a leading BOM here too
        i = 1
    while i < end:
        ch = pattern[i]
        i += 1
        if ch == "*":
            # `**` matches what `*` does; one star is less work for either matcher.
            if not (atoms and atoms[-1] == _STAR):
                parts.append(star)
                atoms.append(_STAR)
        elif ch == "?":
            parts.append(".")
            atoms.append(_ANY)
        elif ch == "\\":
            nxt = pattern[i] if i < end else _EOF
            if nxt in ("}", "/"):
                continue
            if nxt not in ("*", "?", "\\"):
                shown = "\\" + nxt if nxt else "\\ at the end"
                raise _Fail(f"invalid pattern ({pattern}) in substitution: invalid escape '{shown}'")
            parts.append(re.escape(nxt))
            atoms.append(nxt)
            i += 1
        else:
            parts.append(re.escape(ch))
            atoms.append(ch)
    stars = atoms.count(_STAR)
    return _Glob(re.compile("".join(parts)), tuple(atoms), greedy, stars)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    stop = _compile_glob(pattern, greedy).match_end(value)
    return value if stop is None else value[stop:]


def _reverse_pattern(pattern: str) -> str:
    """The pattern backwards, each ``\\x`` escape pair kept in order."""
    pieces: list[str] = []
    i, last = 0, len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            pieces.append(pattern[i:i + 2])
            i += 2
        else:
            pieces.append(pattern[i])
            i += 1
    return "".join(reversed(pieces))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex finds leftmost matches, so search the reversed value with the
    # reversed pattern (this is how BuildKit gets the shortest suffix).
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _replace_first(glob: _Glob, value: str, replacement: str) -> str:
    span = glob.search(value)
    if span is None:
        return value
    return value[:span[0]] + replacement + value[span[1]:]


def _replace_all(glob: _Glob, value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: an empty match right after a match is
    not replaced (Python's re.sub does replace it), and ``$0``/``${0}`` in
    the template is the match, other ``$names`` are empty, ``$$`` is ``$``."""
    out: list[str] = []
    last_end = 0
    search = 0
    end = len(value)
    while search <= end:
        span = glob.search(value, search)
        if span is None:
            break
        start, stop = span
        out.append(value[last_end:start])
        if stop > last_end or start == 0:
            out.append(_expand_template(template, value[start:stop]))
        last_end = stop
        search = search + 1 if search + 1 > stop else stop
    out.append(value[last_end:])
    return "".join(out)


def _expand_template(template: str, match: str) -> str:
    if "$" not in template:
        return template
    out: list[str] = []
    i, end = 0, len(template)
    while True:
        dollar = template.find("$", i)
        if dollar < 0:
            out.append(template[i:])
            return "".join(out)
        out.append(template[i:dollar])
        i = dollar + 1
        if i < end and template[i] == "$":
            out.append("$")
            i += 1
            continue
        name, after = _template_name(template, i)
        if name is None:
            out.append("$")  # malformed: the `$` is literal
            continue
        i = after
        if name == "0":  # the only group our patterns have
            out.append(match)


def _template_name(template: str, i: int) -> tuple[str | None, int]:
    brace = i < len(template) and template[i] == "{"
    start = i + 1 if brace else i
    stop = start
    while stop < len(template) and _is_name_char(template[stop]):
        stop += 1
    if stop == start:
        return None, i
    if brace:
        if stop >= len(template) or template[stop] != "}":
            return None, i
        return template[start:stop], stop + 1
    return template[start:stop], stop
