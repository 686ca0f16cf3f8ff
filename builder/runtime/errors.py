"""Errors of the OCI runtime: each is one line for the user, never a traceback."""
from __future__ import annotations

from ..errors import PybuildError


class RuntimeFailure(PybuildError):
    """The container could not be created, started or managed."""


class ConfigError(RuntimeFailure):
    """config.json asks for something invalid or not supported."""

    def __init__(self, message: str) -> None:
        # Values from config.json are quoted into messages: keep the error one line whatever
        # they hold (newlines and other control characters are shown escaped).
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


class ContainerNotFound(RuntimeFailure):
    """No container with that id in the state directory."""


class ContainerExists(RuntimeFailure):
    """A container with that id already exists."""
