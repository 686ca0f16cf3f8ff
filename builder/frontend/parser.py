"""The raw Dockerfile parse: text to a tree of ``Node``s, as BuildKit's parser builds it.

``parse_dockerfile(text)`` runs the Lark LALR parser over the grammar in
``grammar/dockerfile.lark`` with tokens from ``builder.frontend.lexer``. The
grammar's rules are turned into nodes by ``_AstBuilder`` while parsing; the
argument nodes of each instruction come from BuildKit's per-instruction line
parsers (JSON or string, whitespace list, name/value pairs, ...), written
here as ``parse_*`` functions.

This layer keeps an unknown keyword (``FOO bar`` becomes ``(foo "")``), like
BuildKit; the typed layer (``builder.frontend.instructions``) rejects it.
``builder.frontend.dump`` prints a tree in BuildKit's dump format.
"""
from __future__ import annotations

import gc
import importlib.resources
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lark import Lark, Transformer
from lark.exceptions import LarkError, VisitError

from builder.frontend.errors import DockerfileError
from builder.frontend.lexer import (
    GO_SPACE,
    DockerfileLexer,
    Heredoc,
    LogicalLine,
)

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


@dataclass
class Node:
    """One node of BuildKit's parse tree.

    For an instruction: ``value`` is the keyword as written, ``flags`` the
    ``--flags``, ``next`` the argument nodes, ``heredocs`` the heredocs it
    opened. ONBUILD's single argument node has the trigger instruction as its
    only child. The root has one child per instruction.
    """

    value: str = ""
    next: list["Node"] = field(default_factory=list)
    children: list["Node"] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)
    json: bool = False
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    col: int = 0
    # Where the arguments and each flag start, for error messages.
    args_pos: tuple[int, int] | None = None
    flag_pos: list[tuple[int, int]] = field(default_factory=list)
    empty_continuation: bool = False

    @property
    def keyword(self) -> str:
        return self.value.lower()

    @property
    def args(self) -> list[str]:
        return [n.value for n in self.next]


@dataclass
class ParseResult:
    """The root node plus what the parse learnt about the file."""

    ast: Node
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)
    directive_lines: dict[str, int] = field(default_factory=dict)
    warnings: list[tuple[int, str]] = field(default_factory=list)


# --- BuildKit's line parsers -------------------------------------------------


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on whitespace, respecting quotes; quotes and escapes are kept.

    BuildKit's ``parseWords``, used for ENV, LABEL and ARG.
    """
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    quote = ""
    in_word = False
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if "\udc80" <= ch <= "\udcff":
            ch = "\ufffd"  # Go decodes invalid UTF-8 as U+FFFD here
        if not in_word:
            if ch in GO_SPACE:
                pos += 1
                continue
            in_word = True
        if not quote:
            if ch in GO_SPACE:
                if blank_ok or word:
                    words.append("".join(word))
                word, blank_ok, in_word = [], False, False
                pos += 1
                continue
            if ch == "'" or ch == '"':
                quote, blank_ok = ch, True
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape at the very end is dropped
                # Unquoted, the escape and the next character are both kept.
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        # In quotes.
        if ch == quote:
            quote = ""
        elif ch == escape and quote != "'":
            if pos + 1 == n:
                quote = ""
                pos += 1
                continue
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def _nodes(values: list[str]) -> list[Node]:
    return [Node(value=v) for v in values]


def parse_whitespace_list(rest: str) -> list[Node]:
    """FROM, EXPOSE (and the fall-back of COPY/ADD/VOLUME): split on blanks."""
    if not rest:
        return []
    return _nodes(_WHITESPACE.split(rest))


def parse_name_val(rest: str, key: str, escape: str, pos: tuple[int, int] | None) -> list[Node]:
    """ENV and LABEL: ``k=v k2=v2`` or the legacy ``KEY name value`` form.

    Each pair gives three nodes: key, value and the separator (``=`` or ``""``
    for the legacy form), as BuildKit >= 0.14 does.
    """
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, 1)
        if len(parts) < 2:
            line, col = pos or (0, 0)
            raise DockerfileError(
                f"{key} must have two arguments", line=line, col=col,
                hint=f"write {key} {parts[0]}=<value> (or {key} {parts[0]} <value>)",
            )
        return _nodes([parts[0], parts[1], ""])
    out: list[Node] = []
    for word in words:
        if "=" not in word:
            line, col = pos or (0, 0)
            raise DockerfileError(
                f"Syntax error - can't find = in {_go_quote(word)}. Must be of the form: name=value",
                line=line, col=col,
                hint="quote values that contain spaces: NAME=\"a value\"",
            )
        k, v = word.split("=", 1)
        out.extend(_nodes([k, v, "="]))
    return out


def parse_health(rest: str, json_args: list[str] | None) -> tuple[list[Node], bool]:
    """HEALTHCHECK: the first word (CMD, NONE, ...), then JSON-or-string."""
    sep = 0
    n = len(rest)
    while sep < n and rest[sep] not in GO_SPACE:
        sep += 1
    nxt = sep
    while nxt < n and rest[nxt] in GO_SPACE:
        nxt += 1
    if sep == 0:
        return [], False
    typ = Node(value=rest[:sep])
    cmd_nodes, is_json = _maybe_json(rest[nxt:])
    return [typ, *cmd_nodes], is_json


def _maybe_json(rest: str) -> tuple[list[Node], bool]:
    from builder.frontend.lexer import NotStringArray, parse_json_array

    if not rest:
        return [], False
    try:
        array = parse_json_array(rest)
    except NotStringArray:
        raise DockerfileError(
            "when using JSON array syntax, arrays must be comprised of strings only",
            hint='quote every element: ["executable", "arg1", "arg2"]',
        ) from None
    if array is not None:
        return _nodes(array), True
    return [Node(value=rest)], False


# Keyword -> how its argument text becomes nodes (JSON forms come as JSON_ARRAY).
_STRING = {"maintainer", "user", "workdir", "stopsignal", "run", "cmd", "entrypoint", "shell"}
_WORD_LIST = {"from", "expose", "add", "copy", "volume"}
_KNOWN = _STRING | _WORD_LIST | {"env", "label", "arg", "healthcheck", "onbuild"}


def _go_quote(s: str) -> str:
    from builder.frontend.dump import go_quote

    return go_quote(s)


# --- the grammar's rules to nodes -------------------------------------------


class _AstBuilder(Transformer):
    """Builds ``Node``s while Lark parses (stateless: safe to share)."""

    def start(self, items):
        root = Node(start_line=-1)
        result = ParseResult(ast=root)
        for item in items:
            if isinstance(item, tuple):  # a directive
                key, value, line = item
                result.directives[key] = value
                result.directive_lines[key] = line
                continue
            root.children.append(item)
            if root.start_line < 0:
                root.start_line = item.start_line
            root.end_line = item.end_line
            result.escape = item._escape  # type: ignore[attr-defined]
            if item.empty_continuation:
                result.warnings.append(
                    (item.start_line, "empty continuation line found in: " + item.original)
                )
        return result

    def directive(self, items):
        tok = items[0]
        key, value = tok.data
        return (key, value, tok.line)

    def instruction(self, items):
        node, heredocs, end = items
        logical: LogicalLine = end.data
        node.heredocs = heredocs
        node.original = logical.text
        node.start_line = logical.start_line
        node.end_line = logical.end_line
        node.empty_continuation = logical.empty_continuation
        node._escape = logical.escape  # type: ignore[attr-defined]
        return node

    def simple_command(self, items):
        keyword, flags, args = items
        node = Node(value=str(keyword), col=keyword.column)
        node.flags = [str(f) for f in flags]
        node.flag_pos = [(f.line, f.column) for f in flags]
        lower = node.value.lower()
        escape = keyword.data.escape
        if lower not in _KNOWN:
            node.next = [Node()]  # unknown instruction: BuildKit's parseIgnore
            return node
        if args is None:
            return node
        kind, tok = args
        node.args_pos = (tok.line, tok.column)
        if kind == "json":
            node.json = True
            if lower == "healthcheck" or lower not in _KNOWN:
                pass  # only JSON-capable keywords get JSON_ARRAY tokens
            node.next = _nodes(tok.data)
            return node
        rest = str(tok)
        try:
            if lower in _STRING:
                node.next = [Node(value=rest)]
            elif lower in _WORD_LIST:
                node.next = parse_whitespace_list(rest)
            elif lower == "env" or lower == "label":
                node.next = parse_name_val(rest, lower.upper(), escape, node.args_pos)
            elif lower == "arg":
                node.next = _nodes(parse_words(rest, escape))
            elif lower == "healthcheck":
                node.next, node.json = parse_health(rest, None)
            else:
                node.next = [Node()]  # unknown instruction: BuildKit's parseIgnore
        except DockerfileError as exc:
            if exc.line == 0:
                exc.line, exc.col = node.args_pos
            raise
        return node

    def onbuild_command(self, items):
        keyword, flags, trigger = items
        node = Node(value=str(keyword), col=keyword.column)
        node.flags = [str(f) for f in flags]
        node.flag_pos = [(f.line, f.column) for f in flags]
        if trigger is not None:
            node.next = [Node(children=[trigger])]
            node.args_pos = (trigger.start_line or keyword.line, trigger.col)
        return node

    def trigger(self, items):
        if not items or items[0] is None:
            return None
        sub = items[0]
        sub.start_line = sub.start_line or 0
        return sub

    def flags(self, items):
        return items

    def heredocs(self, items):
        return [tok.data for tok in items]

    def exec_form(self, items):
        return ("json", items[0])

    def shell_form(self, items):
        return ("text", items[0])

    def no_arguments(self, items):
        return None


# --- loading the grammar -----------------------------------------------------

_parser: Lark | None = None
_parser_lock = threading.Lock()


def grammar_text() -> str:
    try:
        return importlib.resources.files("builder.grammar").joinpath("dockerfile.lark").read_text()
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree
        return (Path(__file__).resolve().parents[2] / "grammar" / "dockerfile.lark").read_text()


def _cache_path() -> str | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "pybuild")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return os.path.join(path, "dockerfile-grammar.lark.cache")


def get_parser() -> Lark:
    """The LALR parser, built once per process (and its tables cached on disk)."""
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                cache: bool | str = _cache_path() or False
                try:
                    _parser = Lark(grammar_text(), parser="lalr", lexer=DockerfileLexer,
                                   transformer=_AstBuilder(), cache=cache)
                except OSError:
                    _parser = Lark(grammar_text(), parser="lalr", lexer=DockerfileLexer,
                                   transformer=_AstBuilder())
    return _parser


def decode_dockerfile(data: bytes) -> str:
    """Bytes to text; invalid UTF-8 survives as surrogate escapes."""
    return data.decode("utf-8", "surrogateescape")


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a Dockerfile is parsed.

    A parse allocates hundreds of thousands of small objects that live on, and the collector
    keeps rescanning the growing heap: 10x the instructions cost ~17x the time. Paused, the
    parse is linear (the objects hold no cycles to collect). Safe to nest and across threads:
    the collector is enabled again by whoever found it enabled.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_dockerfile(text: str | bytes, filename: str = "Dockerfile") -> ParseResult:
    """Parse Dockerfile text into BuildKit's node tree.

    Raises ``DockerfileError`` (with file, line, column and the source line)
    for anything BuildKit's parser rejects.
    """
    if isinstance(text, bytes):
        text = decode_dockerfile(text)
    try:
        with gc_paused():
            result = get_parser().parse(text)
    except DockerfileError as exc:
        raise exc.with_source(filename, text.split("\n")) from None
    except VisitError as exc:
        orig = exc.orig_exc
        if isinstance(orig, DockerfileError):
            raise orig.with_source(filename, text.split("\n")) from None
        raise DockerfileError(f"internal parse error: {orig}", filename=filename) from None
    except LarkError as exc:  # the lexer only makes valid sequences; be safe anyway
        line = getattr(exc, "line", 0) or 0
        col = getattr(exc, "column", 0) or 0
        raise DockerfileError(f"syntax error: {exc}".splitlines()[0], line=line, col=col).with_source(
            filename, text.split("\n")) from None
    return result
