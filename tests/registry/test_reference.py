"""Image references parse and normalise the way docker's do."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from builder.registry.reference import InvalidReferenceError, Reference, is_loopback_host, parse_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("text,registry,repository,tag,digest", [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("library/busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/library/busybox:musl", "docker.io", "library/busybox", "musl", None),
    ("someone/tool", "docker.io", "someone/tool", "latest", None),
    (f"localhost:5000/team/app@{DIGEST}", "localhost:5000", "team/app", None, DIGEST),
    (f"localhost/app:v1@{DIGEST}", "localhost", "app", "v1", DIGEST),
    ("registry.example.com:8443/a/b:tag", "registry.example.com:8443", "a/b", "tag", None),
    ("127.0.0.1:5000/x_y/z-w.v__u:1.0-rc_1", "127.0.0.1:5000", "x_y/z-w.v__u", "1.0-rc_1", None),
    ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
])
def test_docker_style_normalisation(text, registry, repository, tag, digest):
    assert parse_reference(text) == Reference(registry, repository, tag, digest)


def test_str_and_familiar_forms():
    ref = parse_reference("busybox:1.36")
    assert str(ref) == "docker.io/library/busybox:1.36"
    assert ref.familiar() == "busybox:1.36"
    assert ref.api_host == "registry-1.docker.io"
    assert parse_reference("localhost:5000/a:b").familiar() == "localhost:5000/a:b"
    assert parse_reference(f"a@{DIGEST}").identifier == DIGEST


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("a//b", "bad path component"),
    ("a/b/", "bad path component"),
    (":tag", "no repository"),
    ("app:-bad", "invalid tag"),
    ("app:" + "t" * 129, "invalid tag"),
    ("app@sha256:abc", "invalid digest"),
    ("app@sha256:" + "A" * 64, "invalid sha256 digest"),
    ("app@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("app name", "whitespace"),
    ("a/" + "b" * 260, "longer than 255"),
    ("-bad.host:5000/app", "invalid registry host"),
])
def test_invalid_references_are_clear_errors(text, message):
    with pytest.raises(InvalidReferenceError, match=message) as err:
        parse_reference(text)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


@given(st.text(max_size=80))
def test_any_string_either_parses_or_raises_invalid_reference(text):
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return
    assert parse_reference(str(ref)) == ref  # the canonical form is a fixed point


def test_loopback_hosts():
    assert is_loopback_host("localhost:5000") and is_loopback_host("127.0.0.1") and is_loopback_host("[::1]:5000")
    assert not is_loopback_host("registry.example.com:5000") and not is_loopback_host("10.0.0.1:5000")
