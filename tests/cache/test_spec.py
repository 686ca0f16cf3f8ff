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


def test_compression_and_pruning_attributes():
    spec = parse_cache_spec("type=registry,ref=r.example/a:c,compression=zstd,compression-level=19,"
                            "force-compression=true,oci-mediatypes=true,image-manifest=true,"
                            "max-age=36h,max-records=500", export=True)
    assert (spec.compression, spec.compression_level, spec.force_compression) == ("zstd", 19, True)
    assert (spec.max_age, spec.max_records) == (36 * 3600, 500)
    spec = parse_cache_spec("type=local,dest=/tmp/c,compression=gzip", export=True)
    assert (spec.compression, spec.compression_level, spec.force_compression) == ("gzip", None, False)
    default = parse_cache_spec("type=registry,ref=r.example/a:c", export=True)
    assert default.compression is None  # layers as the store holds them
    assert (default.max_age, default.max_records, default.merge) == (168 * 3600, 50_000, True)
    assert parse_cache_spec("type=registry,ref=r/a,merge=FALSE", export=True).merge is False


@pytest.mark.parametrize("value,export,message", [
    ("", True, "needs a value"),
    ("type=gha", True, "type=gha is not supported"),
    ("type=registry", True, "needs ref="),
    ("type=local,src=/x", True, "does not take src"),
    ("type=local", False, "needs src=DIR"),
    ("type=registry,ref=a/b,mode=max", False, "does not take mode"),
    ("type=inline,mode=max", True, "mode=min only"),
    ("type=registry,ref", True, "expected key=value"),
    ("type=registry,ref=a/b,compression=estargz", True, "compression=estargz is not supported"),
    ("type=registry,ref=a/b,compression=zstd,compression-level=23", True, "zstd levels are 1-22"),
    ("type=registry,ref=a/b,compression=zstd,compression-level=0", True, "zstd levels are 1-22"),
    ("type=local,dest=/c,compression=gzip,compression-level=10", True, "gzip levels are 0-9"),
    ("type=local,dest=/c,compression=gzip,compression-level=-1", True, "gzip levels are 0-9"),
    ("type=local,dest=/c,compression=gzip,compression-level=fast", True, "gzip levels are 0-9"),
    ("type=registry,ref=a/b,compression-level=3", True, "compression-level needs compression="),
    ("type=registry,ref=a/b,force-compression=true", True, "force-compression needs compression="),
    ("type=registry,ref=a/b,compression=zstd,force-compression=yes", True, "expected true or false"),
    ("type=registry,ref=a/b,merge=flase", True, "merge=flase: expected true or false"),
    ("type=registry,ref=a/b,oci-mediatypes=false", True, "oci-mediatypes=false is not supported"),
    ("type=registry,ref=a/b,image-manifest=false", True, "image-manifest=false is not supported"),
    ("type=registry,ref=a/b,max-age=1week", True, "max-age=1week: bad duration"),
    ("type=registry,ref=a/b,max-age=0s", True, "must be more than 0"),
    ("type=registry,ref=a/b,max-records=0", True, "from 1 to 50000"),
    ("type=registry,ref=a/b,max-records=50001", True, "from 1 to 50000"),
    ("type=registry,ref=a/b,compression=zstd", False, "does not take compression"),
    ("type=inline,compression=zstd", True, "type=inline does not take compression"),
])
def test_bad_values_are_usage_errors(value, export, message):
    with pytest.raises(UsageError, match=message):
        parse_cache_spec(value, export=export)
