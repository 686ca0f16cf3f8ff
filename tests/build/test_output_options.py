"""``--output`` values: what buildx spells and pybuild acts on, and one clear error for the rest."""
from __future__ import annotations

import pytest

from builder.build import parse_outputs
from builder.errors import UsageError


def test_outputs_parse_as_buildx_spells_them() -> None:
    assert parse_outputs(["out-dir"]) == [{"type": "local", "dest": "out-dir"}]
    assert parse_outputs(["type=oci,dest=img.tar", "type=registry,push=false,name=r/app:1"]) == [
        {"type": "oci", "dest": "img.tar"}, {"type": "image", "push": "false", "name": "r/app:1"}]
    # What pybuild always does may be asked for explicitly.
    assert parse_outputs(["type=registry,compression=gzip,oci-mediatypes=true"]) == [
        {"type": "registry", "compression": "gzip", "oci-mediatypes": "true"}]


@pytest.mark.parametrize("value, says", [
    ("type=registry,compression=zstd", "compression=zstd is not supported"),
    ("type=image,compression-level=3", "unsupported key 'compression-level'"),
    ("type=image,unpack=true", "unsupported key 'unpack'"),
    ("type=local,dest=x,colour=red", "unsupported key 'colour'"),
])
def test_an_option_that_would_be_ignored_is_an_error(value: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as caught:
        parse_outputs([value])
    assert caught.value.hint  # says what pybuild does instead
