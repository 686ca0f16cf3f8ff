"""Errors of the OCI runtime: each is one line for the user, never a traceback."""
from __future__ import annotations

from ..errors import PybuildError


class RuntimeFailure(PybuildError):
    """The container could not be created, started or managed."""


class ConfigError(RuntimeFailure):
    """config.json asks for something invalid or not supported."""


class ContainerNotFound(RuntimeFailure):
    """No container with that id in the state directory."""


class ContainerExists(RuntimeFailure):
    """A container with that id already exists."""
