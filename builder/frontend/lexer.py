"""The Dockerfile lexer: physical lines in, grammar tokens out.

This is the context-sensitive part of Dockerfile syntax that an LALR grammar
cannot express, kept as small as BuildKit's line scanner (``parser.Parse``):

* parser directives at the top of the file (``# escape=`` changes the escape
  character used by everything below);
* line continuations (the escape character at the end of a line), skipping
  comment lines and blank lines inside a continued instruction;
* heredoc bodies, read after the instruction line that opens them.

Within one logical line it splits the keyword, the ``--flags`` and the
argument text exactly as BuildKit does, and decides whether the arguments are
a JSON array (exec form). The structure of the file is the grammar's
(``grammar/dockerfile.lark``); this module only produces its tokens.

Text is handled as ``str`` decoded from UTF-8 with ``surrogateescape`` so that
invalid bytes survive round trips; BuildKit's byte-level quirks (its flag
scanner reads bytes) are reproduced where they show in the parse.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Iterator

from lark import Token
from lark.lexer import Lexer

from builder.frontend.errors import DockerfileError

# Go's unicode.IsSpace, which BuildKit uses for trimming (str.isspace differs:
# it also counts \x1c-\x1f).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006" \
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
# BuildKit's reWhitespace, used to split the keyword from the rest.
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$", re.S)
_HEREDOC = re.compile(r"^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$", re.S)
_LEADING_TABS = re.compile(r"^\t+", re.M)

VALID_DIRECTIVES = ("syntax", "escape", "check")
MAX_LINE_BYTES = 65535

# Instructions whose arguments may be a JSON array (exec form).
JSON_FORM_COMMANDS = frozenset({"run", "cmd", "entrypoint", "shell", "add", "copy", "volume"})
# Instructions that may open heredocs (in shell form only).
HEREDOC_COMMANDS = frozenset({"run", "copy", "add"})


class PToken(Token):
    """A Lark token carrying a structured payload (``data``) besides its text."""

    __slots__ = ("data",)


@dataclass
class Heredoc:
    """One heredoc attached to an instruction (BuildKit's ``parser.Heredoc``)."""

    name: str
    file_descriptor: int = 0
    expand: bool = True
    chomp: bool = False
    content: str = ""
    start_line: int = 0  # the line of the first body line

    def chomped(self) -> str:
        """The content with leading tabs stripped from each line, for ``<<-``."""
        return _LEADING_TABS.sub("", self.content) if self.chomp else self.content


@dataclass
class LogicalLine:
    """One instruction's joined text and where each piece came from."""

    text: str
    start_line: int
    end_line: int
    # (offset in text, physical line number, column of that offset in its line)
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    escape: str = "\\"
    # Set when blank lines were skipped inside the continuation.
    empty_continuation: bool = False

    def locate(self, offset: int) -> tuple[int, int]:
        """The (line, column), 1-based, of a character offset in ``text``."""
        line, col0, base = self.start_line, 0, 0
        for seg_off, seg_line, seg_col in self.segments:
            if seg_off > offset:
                break
            base, line, col0 = seg_off, seg_line, seg_col
        return line, col0 + (offset - base) + 1


@dataclass
class Directives:
    """Parser directives seen at the top of the file, and the escape character."""

    escape: str = "\\"
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    done: bool = False
    _continuation: re.Pattern[str] = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.set_escape(self.escape)

    def set_escape(self, escape: str) -> None:
        self.escape = escape
        e = re.escape(escape)
        # The escape char then blanks at the end of a line continues it, unless
        # the escape char is itself escaped (the character before it is kept).
        self._continuation = re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")

    def feed(self, line: str, lineno: int) -> str | None:
        """Look at one line for a directive and return its key, if it is one.

        The first line that is not a known directive ends the search.
        """
        if self.done:
            return None
        m = _DIRECTIVE.match(line)
        if m is None:
            self.done = True
            return None
        key = m.group(1).lower()
        if key not in VALID_DIRECTIVES:
            self.done = True
            return None
        if key in self.values:
            raise DockerfileError(
                f"only one {key} parser directive can be used",
                line=lineno, col=1,
                hint=f"remove the second '# {key}=' line",
            )
        value = m.group(2)
        self.values[key] = value
        self.lines[key] = lineno
        if key == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(
                    f"invalid escape token '{value}' does not match ` or \\",
                    line=lineno, col=1,
                    hint="use '# escape=\\' (the default) or '# escape=`'",
                )
            self.set_escape(value)
        return key

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Remove a trailing continuation; returns (text, ends_here)."""
        # Cheap test first: most lines do not end with the escape character.
        if not line.rstrip(" \t").endswith(self.escape):
            return line, True
        m = self._continuation.search(line)
        if m is None:
            return line, True
        return line[: m.start()] + (m.group(1) or ""), False


def _is_go_space_byte(ch: str) -> bool:
    # BuildKit's flag scanner tests unicode.IsSpace(rune(byte)), which is also
    # true for the bytes 0x85 and 0xA0 (UTF-8 continuation bytes).
    return ch in "\t\n\v\f\r \x85\xa0"


def extract_flags(text: str, escape: str) -> tuple[str, list[str], list[int]]:
    """Split leading ``--flag`` words off ``text`` like BuildKit's extractBuilderFlags.

    Returns (rest, flags, offsets of each flag in ``text``). Quotes inside a
    flag are removed and the escape character escapes the next character; a
    bare ``--`` ends the flags and is dropped.
    """
    if not text.startswith("--") and not text.lstrip(GO_SPACE).startswith("--"):
        return text, [], []
    ascii_only = text.isascii()
    # The scanner is byte-oriented; emulate it on a Latin-1 view of the bytes.
    line = text if ascii_only else text.encode("utf-8", "surrogateescape").decode("latin-1")
    words: list[str] = []
    offsets: list[int] = []
    n = len(line)
    pos = 0
    word: list[str] = []
    blank_ok = False
    rest = ""
    while True:
        # Skip blanks; stop at the first word that does not start with "--".
        while pos < n and _is_go_space_byte(line[pos]):
            pos += 1
        if pos >= n:
            break
        if not line.startswith("--", pos):
            rest = line[pos:]
            break
        start = pos
        word, blank_ok, quote = [], False, ""
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == escape:
                    if pos + 1 == n:
                        quote = ""
                        pos += 1
                        continue
                    pos += 1
                    word.append(line[pos])
                else:
                    word.append(ch)
                pos += 1
                continue
            if _is_go_space_byte(ch):
                break
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
            else:
                word.append(ch)
            pos += 1
        w = "".join(word)
        if w == "--":
            rest = line[pos:] if pos < n else ""
            break
        if blank_ok or w:
            words.append(w)
            offsets.append(start)
    if not ascii_only:
        rest = rest.encode("latin-1").decode("utf-8", "surrogateescape")
        words = [w.encode("latin-1").decode("utf-8", "surrogateescape") for w in words]
        # Offsets were byte offsets; map them back to character offsets.
        raw = text.encode("utf-8", "surrogateescape")
        offsets = [len(raw[:o].decode("utf-8", "surrogateescape")) for o in offsets]
    return rest, words, offsets


def split_command(line: str, escape: str) -> tuple[str, list[str], str, int, list[int]]:
    """(keyword, flags, argument text, offset of the arguments, offsets of flags).

    Offsets are character offsets into ``line``.
    """
    stripped = line.strip(GO_SPACE)
    lead = len(line) - len(line.lstrip(GO_SPACE))
    m = _WHITESPACE.search(stripped)
    if m is None:
        return stripped, [], "", lead + len(stripped), []
    cmd = stripped[: m.start()]
    after = stripped[m.end():]
    base = lead + m.end()
    rest, flags, offsets = extract_flags(after, escape)
    rest_off = base + (len(after) - len(rest))
    args = rest.strip(GO_SPACE)
    rest_off += len(rest) - len(rest.lstrip(GO_SPACE))
    return cmd, flags, args, rest_off, [base + o for o in offsets]


class NotStringArray(Exception):
    """A JSON array with a non-string element: an error, not a fall-back."""


def _reject_constant(name: str) -> None:
    # Python's json accepts NaN/Infinity; Go's decoder (BuildKit) does not.
    raise ValueError(name)


def parse_json_array(text: str) -> list[str] | None:
    """The elements of a JSON array of strings, or None if ``text`` is not one.

    Raises ``NotStringArray`` for a valid array holding anything but strings.
    """
    t = text.lstrip(GO_SPACE)
    if not t.startswith("["):
        return None
    try:
        value = json.loads(t, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    for item in value:
        if not isinstance(item, str):
            raise NotStringArray()
    return value


@functools.lru_cache(maxsize=1)
def _heredoc_lexers():
    """The shell lexers heredoc words are read with, made once (they are immutable): making
    three per instruction was a tenth of the time of a file of heredocs."""
    from builder.frontend.shell import Lexer as ShellLexer

    return (ShellLexer(skip_unset_env=True), ShellLexer(skip_unset_env=True, raw_quotes=True),
            ShellLexer(raw_quotes=True, raw_escapes=True, skip_unset_env=True))


def parse_heredoc_word(word: str) -> Heredoc | None:
    """A heredoc from one shell word such as ``<<EOF``, ``<<-'EOF'`` or ``3<<EOF``.

    Quoting any part of the name turns off expansion of the body.
    """
    m = _HEREDOC.match(word)
    if m is None:
        return None
    fd, chomp, rest = m.group(1), m.group(2) == "-", m.group(3)
    if not rest:
        return None
    plain, raw_lexer, _ = _heredoc_lexers()
    try:
        words = plain.process_words(rest, {})
    except Exception as exc:  # the shell lexer's own error type
        raise DockerfileError(f"invalid heredoc name {rest!r}: {exc}",
                              hint="close the quotes around the heredoc delimiter") from None
    if len(words) != 1:
        return None
    raw = raw_lexer.process_words(rest, {})
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(name=name, file_descriptor=int(fd) if fd else 0,
                   expand=quotes == raw_quotes, chomp=chomp)


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs an instruction line opens, in order."""
    if "<<" not in line:
        return []
    try:
        words = _heredoc_lexers()[2].process_words(line, {})
    except Exception:
        return []
    docs: list[Heredoc] = []
    i = 0
    while i < len(words):
        word = words[i]
        # `<< EOF`: BuildKit accepts blanks between the operator and the name.
        if i + 1 < len(words) and re.fullmatch(r"\d*<<", word):
            joined = parse_heredoc_word(word + " " + words[i + 1])
            if joined is not None:
                docs.append(joined)
                i += 2
                continue
        doc = parse_heredoc_word(word)
        if doc is not None:
            docs.append(doc)
        i += 1
    return docs


class DockerfileLexer(Lexer):
    """Lark custom lexer: Dockerfile text to DIRECTIVE/KEYWORD/FLAG/... tokens.

    Stateless (one instance serves every parse, from any thread): what the
    parser needs to know travels in the tokens' payloads.
    """

    __future_interface__ = 2  # lex(lexer_state, parser_state), text as a TextSlice

    def __init__(self, lexer_conf) -> None:  # noqa: D107 - Lark's interface
        pass

    def lex(self, lexer_state, parser_state) -> Iterator[Token]:
        text = lexer_state.text
        if not isinstance(text, str):  # Lark >= 1.2 wraps the text in a TextSlice
            text = text.text
        yield from tokenize(text, Directives())


def _tok(kind: str, value: str, line: int, col: int, data: object = None) -> PToken:
    t = PToken(kind, value, None, line, col)
    t.data = data
    return t


def tokenize(text: str, d: Directives) -> Iterator[Token]:
    """Yield the grammar's tokens for a whole Dockerfile."""
    lines = text.split("\n")
    # Every physical line but the last had a newline; a trailing "" is no line.
    nlines = len(lines) - 1 if lines[-1] == "" else len(lines)
    if lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    i = 0
    any_instruction = False
    while i < nlines:
        raw = lines[i]
        _check_length(raw, i + 1)
        token = raw.rstrip("\r\n").lstrip(GO_SPACE)
        lineno = i + 1
        if not d.done:
            key = d.feed(token, lineno)
            if key is not None:
                yield _tok("DIRECTIVE", token, lineno, 1, (key, d.values[key]))
        lead = len(raw) - len(raw.lstrip(GO_SPACE))
        if token.startswith("#"):
            token = ""
        i += 1
        line, ends = d.trim_continuation(token)
        if ends and line == "":
            continue
        logical = LogicalLine(line, lineno, lineno, [(0, lineno, lead)])
        empty_continuation = False
        while not ends and i < nlines:
            raw = lines[i]
            _check_length(raw, i + 1)
            cont = raw.rstrip("\r\n")
            if not d.done:
                d.feed(cont, i + 1)
            i += 1
            logical.end_line = i
            stripped = cont.lstrip(GO_SPACE)
            if stripped.startswith("#"):
                continue
            if not stripped:
                empty_continuation = True
                continue
            piece, ends = d.trim_continuation(cont)
            logical.segments.append((len(line), i, 0))
            line += piece
        logical.text = line
        logical.escape = d.escape
        logical.empty_continuation = empty_continuation
        any_instruction = True
        heredoc_capable = yield from _instruction_tokens(logical, d.escape)
        # Heredoc bodies follow the instruction line.
        if heredoc_capable and "<<" in line:
            i = yield from _heredoc_tokens(logical, lines, nlines, i)
        yield _tok("END", "", logical.end_line, 1, logical)
    if not any_instruction:
        raise DockerfileError(
            "file with no instructions", line=nlines,
            hint="a Dockerfile needs at least a FROM instruction",
        )


def _check_length(raw: str, lineno: int) -> None:
    if len(raw) > MAX_LINE_BYTES // 4 and len(raw.rstrip("\r\n").encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
        raise DockerfileError(
            f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}", line=lineno,
            hint="split the line with line continuations",
        )


def _instruction_tokens(logical: LogicalLine, escape: str, base: int = 0):
    """KEYWORD/ONBUILD, FLAGs and the arguments of one (possibly nested) instruction.

    Returns whether the instruction may open heredocs (RUN/COPY/ADD in shell
    form, also as an ONBUILD trigger).
    """
    text = logical.text[base:]
    cmd, flags, args, args_off, flag_offs = split_command(text, escape)
    lead = len(text) - len(text.lstrip(GO_SPACE))
    line, col = logical.locate(base + lead)
    lower = cmd.lower()
    yield _tok("ONBUILD" if lower == "onbuild" else "KEYWORD", cmd, line, col, logical)
    for flag, off in zip(flags, flag_offs):
        fl, fc = logical.locate(base + off)
        yield _tok("FLAG", flag, fl, fc)
    if lower == "onbuild":
        if args:
            return (yield from _instruction_tokens(logical, escape, base + args_off))
        return False
    if not args:
        return lower in HEREDOC_COMMANDS
    al, ac = logical.locate(base + args_off)
    if lower in JSON_FORM_COMMANDS:
        try:
            array = parse_json_array(args)
        except NotStringArray:
            raise DockerfileError(
                "when using JSON array syntax, arrays must be comprised of strings only",
                line=al, col=ac, end_line=logical.end_line,
                hint='quote every element: ["executable", "arg1", "arg2"]',
            ) from None
        if array is not None:
            yield _tok("JSON_ARRAY", args, al, ac, array)
            return False
    yield _tok("TEXT", args, al, ac)
    return lower in HEREDOC_COMMANDS


def _heredoc_tokens(logical: LogicalLine, lines: list[str], nlines: int, i: int):
    """Read the bodies of the heredocs an instruction opens; returns the next line index."""
    try:
        docs = heredocs_from_line(logical.text)
    except DockerfileError as exc:
        if exc.line <= 0:
            exc.line, exc.end_line = logical.start_line, logical.end_line
        raise
    for doc in docs:
        terminated = False
        body: list[str] = []
        doc.start_line = i + 1
        while i < nlines:
            raw = lines[i]
            i += 1
            candidate = raw.rstrip("\r\n")
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                terminated = True
                break
            # Body lines keep their newline (the file's last line may have none).
            body.append(raw + "\n" if i < len(lines) else raw)
        if not terminated:
            raise DockerfileError(
                f"unterminated heredoc <<{doc.name} started on line {logical.start_line}",
                line=logical.start_line, col=1, end_line=i,
                hint=f"end the heredoc with a line containing only {doc.name}",
            )
        doc.content = "".join(body)
        logical.end_line = i
        yield _tok("HEREDOC", doc.name, doc.start_line, 1, doc)
    return i
