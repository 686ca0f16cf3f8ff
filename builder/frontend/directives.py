"""Parser directives read on their own, without parsing the whole Dockerfile.

``detect_syntax`` finds the ``# syntax=`` frontend reference (also as
``//syntax=`` or a JSON object, after an optional ``#!`` line), and
``parse_directive`` any ``#`` directive such as ``# check=``. pybuild has one
frontend built in, so ``syntax`` is reported, not obeyed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

VALID_DIRECTIVES = ("syntax", "escape", "check")


@dataclass(frozen=True)
class Directive:
    name: str
    value: str
    line: int

    @property
    def ref(self) -> str:
        """The value up to its first space (``dockerfile:1 // opts`` -> ``dockerfile:1``)."""
        return self.value.split(" ", 1)[0]


def _pattern(comment: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(comment)}[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*="
                      r"[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$")


_HASH = _pattern("#")
_SLASHES = _pattern("//")


def parse_all(text: str, comment: str = "#", first_line: int = 1) -> list[Directive]:
    """The directives at the top of ``text``; the first other line ends them."""
    pattern = _HASH if comment == "#" else _SLASHES
    out: list[Directive] = []
    seen: set[str] = set()
    for offset, line in enumerate(text.split("\n")):
        m = pattern.match(line)
        if m is None:
            break
        name = m.group(1).lower()
        if name not in VALID_DIRECTIVES or name in seen:
            break
        seen.add(name)
        out.append(Directive(name, m.group(2), first_line + offset))
    return out


def _strip(text: str) -> tuple[str, int]:
    text = text.removeprefix("\ufeff")
    first, nl, rest = text.partition("\n")
    if first.startswith("#!"):
        return rest, 2
    return text, 1


def parse_directive(key: str, text: str) -> Directive | None:
    """A ``#`` directive by name (after an optional ``#!`` line)."""
    body, line = _strip(text)
    return next((d for d in parse_all(body, "#", line) if d.name == key), None)


def detect_syntax(text: str) -> Directive | None:
    """The ``syntax`` directive in any of its three forms."""
    body, line = _strip(text)
    for comment in ("#", "//"):
        found = next((d for d in parse_all(body, comment, line) if d.name == "syntax"), None)
        if found is not None:
            return found
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("syntax"), str):
        return Directive("syntax", obj["syntax"], line)
    return None
