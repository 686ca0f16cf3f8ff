"""Image references (``busybox``, ``localhost:5000/team/app@sha256:...``), parsed and
normalised the way docker does: an implicit ``docker.io`` registry, an implicit
``library/`` namespace for single-component Docker Hub names, and ``latest`` when
neither tag nor digest is given.

Pure functions only; the content store uses :func:`parse_reference` for naming too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import PybuildError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's API lives on a different host than the name users type.
DOCKER_HUB_API_HOST = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
MAX_NAME_LENGTH = 255


class InvalidReferenceError(PybuildError):
    """A string that is not a valid image reference."""

    exit_code = 2
    hint = "references look like NAME[:TAG][@DIGEST], e.g. busybox:1.36 or localhost:5000/team/app@sha256:<64 hex>"


@dataclass(frozen=True)
class Reference:
    """A normalised reference: registry host, repository path, and tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` with no tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host[:port] serving the distribution API for this registry."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> "Reference":
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r}")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, self.tag, _check_digest(digest, digest))

    def familiar(self) -> str:
        """The short form docker prints: ``busybox:1.36`` rather than ``docker.io/library/busybox:1.36``."""
        repo = self.repository
        if self.registry == DEFAULT_REGISTRY:
            repo = repo.removeprefix("library/") if repo.count("/") == 1 else repo
        else:
            repo = f"{self.registry}/{repo}"
        return repo + self._suffix()

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag else ""
        return out + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _check_digest(digest: str, original: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise InvalidReferenceError(f"invalid digest in reference {original!r}")
    algo, _, hexpart = digest.partition(":")
    want = _HEX_LENGTHS.get(algo)
    if want is None:
        raise InvalidReferenceError(f"unsupported digest algorithm {algo!r} in {original!r}")
    if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise InvalidReferenceError(f"invalid {algo} digest in reference {original!r}")
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    # docker's rule: the first component is a registry when it looks like a host.
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_REGISTRY, name
    if domain == "index.docker.io":
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise ``text``; raise :class:`InvalidReferenceError` when it is not a reference.

    With ``default_tag`` (the default) a bare name gets the tag ``latest``.
    """
    original = text
    if not isinstance(text, str) or not text.strip():
        raise InvalidReferenceError("empty image reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReferenceError(f"invalid reference {original!r}: contains whitespace")
    digest = None
    if "@" in text:
        text, _, digest = text.partition("@")
        digest = _check_digest(digest, original)
    tag = None
    # A ':' after the last '/' separates the tag (a ':' before it is a registry port).
    colon = text.rfind(":")
    if colon > text.rfind("/"):
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r} in reference {original!r}")
    if not text:
        raise InvalidReferenceError(f"invalid reference {original!r}: no repository name")
    domain, path = _split_domain(text)
    if domain != DEFAULT_REGISTRY and not _DOMAIN_RE.match(domain):
        raise InvalidReferenceError(f"invalid registry host {domain!r} in reference {original!r}")
    for component in path.split("/"):
        if not _COMPONENT_RE.match(component):
            if component.lower() != component and _COMPONENT_RE.match(component.lower()):
                raise InvalidReferenceError(
                    f"invalid reference {original!r}: repository names must be lowercase"
                )
            raise InvalidReferenceError(
                f"invalid reference {original!r}: bad path component {component!r}"
            )
    if len(path) > MAX_NAME_LENGTH:
        raise InvalidReferenceError(
            f"invalid reference: repository name longer than {MAX_NAME_LENGTH} characters"
        )
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (with or without a port)."""
    h = host
    if h.startswith("["):
        h = h[1:h.index("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.split(":")[0]
    return h == "localhost" or h.endswith(".localhost") or h.startswith("127.") or h == "::1"
