"""The Dockerfile frontend: parse, type, and expand Dockerfiles.

* ``parse_dockerfile`` — the raw parse (BuildKit's node tree), see ``parser``;
* ``parse`` — typed instructions grouped into stages, see ``stages``;
* ``ExpansionScope`` / ``resolve_meta_args`` / ``expand_from`` — ARG/ENV expansion;
* ``DockerfileError`` — every frontend failure, with file:line:col and a hint.
"""
from builder.frontend.errors import DockerfileError
from builder.frontend.parser import ParseResult, parse_dockerfile
from builder.frontend.stages import (
    Dockerfile,
    ExpansionScope,
    Stage,
    expand_from,
    parse,
    resolve_meta_args,
)

__all__ = [
    "DockerfileError", "Dockerfile", "ExpansionScope", "ParseResult", "Stage", "expand_from",
    "parse", "parse_dockerfile", "resolve_meta_args",
]
