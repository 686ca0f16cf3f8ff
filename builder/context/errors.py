"""Errors of the build context: each one a single line a user can act on."""
from __future__ import annotations

from builder.errors import PybuildError


class ContextError(PybuildError):
    """The build context cannot be read or used as asked."""


class SourceNotFound(ContextError):
    """A COPY/ADD source names nothing visible in the context."""

    def __init__(self, pattern: str, *, ignored: bool = False, link: tuple[str, str] | None = None) -> None:
        # Docker's wording, so users recognise it: failed to compute cache key: "/x" not found
        super().__init__(f'failed to compute cache key: "{pattern}" not found')
        if ignored:
            self.hint = f"{pattern!r} is excluded by .dockerignore; remove it there to copy it"
        elif link is not None:
            path, target = link
            self.hint = (f"/{path} is a symbolic link to {target!r}: COPY follows links only inside the "
                         "build context, as if it were /, and nothing is there")
        else:
            self.hint = "paths are relative to the build context; check the name and the .dockerignore"


class BadPattern(ContextError):
    """A wildcard or .dockerignore pattern that Go's filepath.Match would reject."""


class UnsafeArchive(ContextError):
    """A tar context with an entry that would land outside the context."""
