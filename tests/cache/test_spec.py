"""``--cache-to`` / ``--cache-from`` values, parsed as docker buildx does."""
from __future__ import annotations

import pytest

from builder.cache.spec import parse_cache_spec
from builder.errors import UsageError


def test_a_bare_reference_is_a_registry_source():
    spec = parse_cache_spec("registry.example/app:cache", export=False)
    assert (spec.type, spec.attrs) == ("registry", {"ref": "registry.example/app:cache"})


def test_export_attributes():
    spec = parse_cache_spec("type=registry,ref=r.example/a:c,mode=max,merge=false,ignore-error=true", export=True)
    assert (spec.mode, spec.merge, spec.ignore_error) == ("max", False, True)
    assert parse_cache_spec("type=local,dest=/tmp/c", export=True).mode == "min"
    assert parse_cache_spec("type=inline", export=True).type == "inline"


@pytest.mark.parametrize("value,export,message", [
    ("", True, "needs a value"),
    ("type=gha", True, "type=gha is not supported"),
    ("type=registry", True, "needs ref="),
    ("type=local,src=/x", True, "does not take src"),
    ("type=local", False, "needs src=DIR"),
    ("type=registry,ref=a/b,mode=max", False, "does not take mode"),
    ("type=inline,mode=max", True, "mode=min only"),
    ("type=registry,ref=a/b,compression=zstd", True, "not supported yet"),
    ("type=registry,ref", True, "expected key=value"),
])
def test_bad_values_are_usage_errors(value, export, message):
    with pytest.raises(UsageError, match=message):
        parse_cache_spec(value, export=export)
