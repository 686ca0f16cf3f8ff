"""Authentication against real registries: htpasswd Basic, and Bearer tokens from a token server."""
from __future__ import annotations

import pytest

from builder.registry.auth import parse_challenge
from builder.registry.credentials import Credentials, store_credentials
from builder.registry.errors import AuthenticationError
from builder.registry.pull import pull_image
from builder.registry.push import push_image
from builder.registry.transport import RegistryOptions
from servers import USERS
from fault_proxy import FaultProxy
from images import DirBlobStore, make_image

ALICE = Credentials("alice", USERS["alice"])


def as_alice() -> RegistryOptions:
    return RegistryOptions(credentials=ALICE)


def test_parse_bearer_challenge_with_quoted_and_bare_values():
    c = parse_challenge('Bearer realm="https://auth.example.com/token",service=registry.example.com,'
                        'scope="repository:team/app:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                        "scope": "repository:team/app:pull,push"}
    assert parse_challenge('Basic realm="Registry Realm"') .params == {"realm": "Registry Realm"}


# -- htpasswd Basic -----------------------------------------------------------------------

def test_basic_auth_push_and_pull_with_credentials_from_docker_config(htpasswd_registry, store, tmp_path):
    store_credentials(htpasswd_registry.host, ALICE)  # into the test's $DOCKER_CONFIG
    image = make_image(store, [{"f": b"basic"}])
    ref = f"{htpasswd_registry.host}/team/basic:v1"
    push_image(ref, store, image.manifest)
    fresh = DirBlobStore(tmp_path / "fresh")
    assert pull_image(ref, fresh).manifest.digest == image.manifest.digest


def test_basic_auth_wrong_password_is_refused_without_echoing_it(htpasswd_registry, store):
    secret = "not-the-password-xyzzy"
    image = make_image(store, [{"f": b"nope"}])
    with pytest.raises(AuthenticationError) as err:
        push_image(f"{htpasswd_registry.host}/team/basic:v2", store, image.manifest,
                   options=RegistryOptions(credentials=Credentials("alice", secret)))
    assert "401" in str(err.value)
    assert secret not in err.value.render()


def test_basic_auth_without_credentials_says_authentication_required(htpasswd_registry, store):
    with pytest.raises(AuthenticationError, match="authentication required"):
        pull_image(f"{htpasswd_registry.host}/team/basic:v1", store)


def test_redirected_blob_download_never_sends_credentials_to_the_other_host(
        htpasswd_registry, plain_registry, store, tmp_path):
    image = make_image(store, [{"f": b"redirect me"}])
    repo = "team/redirected:v1"
    push_image(f"{htpasswd_registry.host}/{repo}", store, image.manifest, options=as_alice())
    push_image(f"{plain_registry.host}/{repo}", store, image.manifest)  # the "blob storage"
    front = FaultProxy(htpasswd_registry.host)
    storage = FaultProxy(plain_registry.host)
    try:
        front.redirect_host = f"localhost:{storage.port}"  # another host name, as S3 would be
        front.policy = lambda m, p, n: "redirect" if (m == "GET" and "/blobs/" in p) else None
        fresh = DirBlobStore(tmp_path / "fresh")
        pull_image(f"{front.host}/{repo}", fresh, options=as_alice())
        assert fresh.blobs() == store.blobs()
        redirected = [h for m, p, f, h in front.log if f == "redirect"]
        served = [h for m, p, f, h in storage.log if "/blobs/" in p]
        assert redirected and all("Authorization" in h for h in redirected)
        assert served and not any("Authorization" in h for h in served)
    finally:
        front.stop()
        storage.stop()


# -- Bearer tokens ------------------------------------------------------------------------

def test_token_flow_push_and_pull_caches_one_token_per_scope(token_registry, token_server, store, tmp_path):
    image = make_image(store, [{"a": b"1"}, {"b": b"2"}, {"c": b"3"}, {"d": b"4"}])
    ref = f"{token_registry.host}/team/tokens:v1"
    before = len(token_server.requests_seen)
    push_image(ref, store, image.manifest, options=as_alice())
    pushes = token_server.requests_seen[before:]
    # 5 blobs × (HEAD, POST, PUT) + manifest requests, but one token for the push scope.
    assert pushes == [("alice", ("repository:team/tokens:pull,push",))]
    before = len(token_server.requests_seen)
    pull_image(ref, DirBlobStore(tmp_path / "fresh"), options=as_alice())
    assert token_server.requests_seen[before:] == [("alice", ("repository:team/tokens:pull",))]


def test_token_server_answering_access_token_works_too(token_registry, token_server, store, tmp_path):
    image = make_image(store, [{"a": b"oauth"}])
    token_server.answer_key = "access_token"
    try:
        ref = f"{token_registry.host}/team/oauth:v1"
        push_image(ref, store, image.manifest, options=as_alice())
        assert pull_image(ref, DirBlobStore(tmp_path / "f"), options=as_alice()).manifest.digest == image.manifest.digest
    finally:
        token_server.answer_key = "token"


def test_tokens_are_reused_until_they_expire_then_fetched_again(token_registry, token_server, store, monkeypatch):
    from builder.registry import auth as auth_module
    from builder.registry.client import RepositoryClient
    from builder.registry.transport import Transport

    image = make_image(store, [{"a": b"expiry"}])
    push_image(f"{token_registry.host}/team/expiry:v1", store, image.manifest, options=as_alice())
    client = RepositoryClient(Transport(token_registry.host, as_alice()), "team/expiry")
    clock = [1000.0]
    monkeypatch.setattr(auth_module, "_now", lambda: clock[0])
    before = len(token_server.requests_seen)
    client.blob_size(image.layer_digests[0])
    client.blob_size(image.config_digest)
    assert len(token_server.requests_seen) == before + 1  # cached for the second request
    clock[0] += token_server.expires_in  # past expiry (less the safety margin)
    assert client.blob_size(image.layer_digests[0]) is not None
    assert len(token_server.requests_seen) == before + 2


def test_anonymous_pull_of_a_public_repository(token_registry, store, tmp_path):
    image = make_image(store, [{"a": b"public"}])
    ref = f"{token_registry.host}/public/app:v1"
    push_image(ref, store, image.manifest, options=as_alice())
    pulled = pull_image(ref, DirBlobStore(tmp_path / "anon"))  # no credentials at all
    assert pulled.manifest.digest == image.manifest.digest


def test_anonymous_push_is_refused_clearly(token_registry, store):
    image = make_image(store, [{"a": b"anon push"}])
    with pytest.raises(AuthenticationError, match="unauthorized|denied"):
        push_image(f"{token_registry.host}/team/anon:v1", store, image.manifest)


def test_wrong_password_at_the_token_server_is_refused_without_echoing_it(token_registry, store):
    secret = "definitely-wrong-password-42"
    with pytest.raises(AuthenticationError, match="token server refused") as err:
        pull_image(f"{token_registry.host}/team/tokens:v1", store,
                   options=RegistryOptions(credentials=Credentials("alice", secret)))
    assert secret not in err.value.render()


def test_identity_token_from_docker_config_uses_the_oauth2_refresh_grant(
        token_registry, token_server, store, isolated_docker_config, tmp_path):
    import json

    image = make_image(store, [{"a": b"identity"}])
    ref = f"{token_registry.host}/team/identity:v1"
    push_image(ref, store, image.manifest, options=as_alice())
    (isolated_docker_config / "config.json").write_text(json.dumps({"auths": {token_registry.host: {
        "identitytoken": f"alice:{USERS['alice']}"}}}))
    before = len(token_server.requests_seen)
    pulled = pull_image(ref, DirBlobStore(tmp_path / "f"))
    assert pulled.manifest.digest == image.manifest.digest
    assert token_server.requests_seen[before:] == [("alice", ("repository:team/identity:pull",))]
