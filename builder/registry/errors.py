"""Errors the registry client reports to users: one line each, never a credential."""
from __future__ import annotations

from builder.errors import PybuildError


class RegistryError(PybuildError):
    """A registry operation failed."""


class RegistryUnreachableError(RegistryError):
    """Could not talk to the registry at all (after the retries were spent)."""

    hint = "check the registry address; for a plain-http registry use --insecure-registry HOST"


class TransferError(RegistryUnreachableError):
    """The registry answered, but a download kept breaking off (after the retries were spent)."""

    hint = "the registry (or a proxy in between) keeps cutting transfers short; retry later"


class AuthenticationError(RegistryError):
    """The registry refused our credentials (or we had none)."""

    hint = "run `pybuild login REGISTRY` or check the stored credentials"


class NotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist."""


class UnsupportedManifestError(RegistryError):
    """A manifest media type we do not handle (e.g. Docker schema 1)."""


class VerificationError(RegistryError):
    """Content from the registry did not match its digest or size: a lying or broken registry."""


class NoMatchingPlatformError(RegistryError):
    """An index has no manifest for the requested platform."""


class CredentialsError(RegistryError):
    """Reading or writing the docker config / a credential helper failed."""
