"""BuildKit's parse-tree dump format, so the two parsers can be compared on any file.

``dump(node)`` reproduces ``parser.Node.Dump()`` exactly: one
``(keyword ["--flags"] "arg" ...)`` line per instruction, strings quoted like
Go's ``strconv.Quote``, flags printed like Go's ``%q`` of a ``[]string``
(including BuildKit's byte-wise handling of non-ASCII flag text).
"""
from __future__ import annotations

from builder.frontend.parser import Node

_SIMPLE_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
    "\v": "\\v", '"': '\\"', "\\": "\\\\",
}


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``: printable runes kept, the rest escaped."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = ['"']
    for ch in s:
        esc = _SIMPLE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an invalid UTF-8 byte (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def _bytewise(flag: str) -> str:
    # BuildKit's flag scanner appends each byte as a rune: non-ASCII text comes
    # out as the Latin-1 reading of its UTF-8 bytes.
    if flag.isascii():
        return flag
    return flag.encode("utf-8", "surrogateescape").decode("latin-1")


def dump_node(node: Node) -> str:
    s = node.value.lower()
    if node.flags:
        s += " [" + " ".join(go_quote(_bytewise(f)) for f in node.flags) + "]"
    for child in node.children:
        s += "(" + dump_node(child) + ")\n"
    for n in node.next:
        if n.children:
            s += " " + dump_node(n)
        else:
            s += " " + go_quote(n.value)
    # Go's strings.TrimSpace.
    return s.strip("\t\n\v\f\r \x85\xa0")


def dump(root: Node) -> str:
    """The whole tree as BuildKit prints it, plus the final newline of a ``result`` file."""
    return dump_node(root) + "\n"
