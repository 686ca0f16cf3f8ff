"""``COPY --chmod`` values: an octal mode, or a symbolic one like chmod(1)'s ``u+x,go-w``.

``parse_chmod(spec)`` returns a function ``(old_mode, is_dir) -> new_mode`` over the permission
bits (and setuid/setgid/sticky). Pure.
"""
from __future__ import annotations

import re
from typing import Callable

_CLAUSE = re.compile(r"^([ugoa]*)([-+=])([rwxXst]*|[ugo])$")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_PERM_SHIFT = {"u": 6, "g": 3, "o": 0}


class ChmodError(ValueError):
    pass


def parse_chmod(spec: str) -> Callable[[int, bool], int]:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        value = int(spec, 8)
        return lambda _old, _is_dir: value
    clauses = []
    for part in spec.split(","):
        m = _CLAUSE.match(part)
        if m is None:
            raise ChmodError(f"invalid --chmod value {spec!r}")
        clauses.append(m.groups())

    def apply(old: int, is_dir: bool) -> int:
        mode = old & 0o7777
        for who, op, perms in clauses:
            targets = who.replace("a", "ugo") or "ugo"
            if perms in ("u", "g", "o"):  # copy another class's bits
                src = (mode >> _PERM_SHIFT[perms]) & 0o7
                bits = sum(src << _PERM_SHIFT[t] for t in set(targets))
            else:
                bits = 0
                for t in set(targets):
                    shift = _PERM_SHIFT[t]
                    for p in perms:
                        if p == "r":
                            bits |= 0o4 << shift
                        elif p == "w":
                            bits |= 0o2 << shift
                        elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                            bits |= 0o1 << shift
                        elif p == "s" and t in "ug":
                            bits |= 0o4000 if t == "u" else 0o2000
                        elif p == "t" and t == "o":
                            bits |= 0o1000
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mask = sum(_WHO[t] for t in set(targets))
                mode = (mode & ~mask) | bits
        return mode

    return apply
