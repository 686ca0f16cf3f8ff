"""--chmod values, octal and symbolic, computed like chmod(1)."""
from __future__ import annotations

import pytest

from builder.solver.chmod import ChmodError, parse_chmod


@pytest.mark.parametrize("spec, old, is_dir, want", [
    ("0755", 0o600, False, 0o755),
    ("644", 0o777, True, 0o644),
    ("u+x", 0o644, False, 0o744),
    ("go-w", 0o666, False, 0o644),
    ("a=r", 0o755, False, 0o444),
    ("=rw", 0o700, False, 0o666),
    ("u=rwx,g=rx,o=", 0o000, True, 0o750),
    ("a+X", 0o644, False, 0o644),   # X: only for directories or already-executable files
    ("a+X", 0o644, True, 0o755),
    ("a+X", 0o744, False, 0o755),
    ("g=u", 0o640, False, 0o660),
    ("u+s,o+t", 0o755, False, 0o5755),
])
def test_modes(spec, old, is_dir, want):
    assert parse_chmod(spec)(old, is_dir) == want


@pytest.mark.parametrize("spec", ["999", "u+q", "z=r", "u+x,,", ""])
def test_invalid(spec):
    with pytest.raises(ChmodError):
        parse_chmod(spec)
