"""Docker config.json credentials, credential helpers, and `pybuild login/logout`."""
from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from builder.cli import main
from builder.registry.credentials import (
    Credentials, erase_credentials, get_credentials, store_credentials,
)
from builder.registry.errors import CredentialsError
from servers import USERS


def write_config(dirpath, data) -> None:
    (dirpath / "config.json").write_text(json.dumps(data))


def test_auths_entry_is_read_from_DOCKER_CONFIG(isolated_docker_config):
    token = base64.b64encode(b"carol:s3cret:with:colons").decode()
    write_config(isolated_docker_config, {"auths": {"reg.example.com:5000": {"auth": token}}})
    creds = get_credentials("reg.example.com:5000")
    assert (creds.username, creds.password) == ("carol", "s3cret:with:colons")
    assert get_credentials("other.example.com") is None
    assert "s3cret" not in repr(creds)


def test_docker_hub_uses_the_legacy_index_key(isolated_docker_config):
    store_credentials("docker.io", Credentials("dave", "pw"))
    data = json.loads((isolated_docker_config / "config.json").read_text())
    assert list(data["auths"]) == ["https://index.docker.io/v1/"]
    assert get_credentials("docker.io").username == "dave"


def test_store_keeps_other_settings_and_is_private(isolated_docker_config):
    write_config(isolated_docker_config, {"auths": {}, "psFormat": "table {{.ID}}"})
    store_credentials("reg.example.com", Credentials("erin", "pw"))
    path = isolated_docker_config / "config.json"
    assert json.loads(path.read_text())["psFormat"] == "table {{.ID}}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert erase_credentials("reg.example.com") is True
    assert get_credentials("reg.example.com") is None
    assert erase_credentials("reg.example.com") is False


@pytest.fixture
def credential_helper(tmp_path, monkeypatch):
    """A real docker-credential-* program on PATH keeping secrets in a JSON file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    db = tmp_path / "helper-db.json"
    db.write_text("{}")
    script = bindir / "docker-credential-pytest"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
db = {str(db)!r}
data = json.load(open(db))
action = sys.argv[1]
payload = sys.stdin.read()
if action == "get":
    entry = data.get(payload.strip())
    if not entry:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": payload.strip(), "Username": entry[0], "Secret": entry[1]}}))
elif action == "store":
    req = json.loads(payload); data[req["ServerURL"]] = [req["Username"], req["Secret"]]
    json.dump(data, open(db, "w"))
elif action == "erase":
    data.pop(payload.strip(), None); json.dump(data, open(db, "w"))
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return db


def test_creds_store_helper_round_trip(isolated_docker_config, credential_helper):
    write_config(isolated_docker_config, {"credsStore": "pytest"})
    store_credentials("reg.example.com", Credentials("frank", "helper-secret"))
    assert json.loads(credential_helper.read_text()) == {"reg.example.com": ["frank", "helper-secret"]}
    # The secret lives only in the helper, never in config.json.
    assert "helper-secret" not in (isolated_docker_config / "config.json").read_text()
    assert get_credentials("reg.example.com") == Credentials("frank", "helper-secret")
    erase_credentials("reg.example.com")
    assert get_credentials("reg.example.com") is None


def test_cred_helpers_per_registry_win_over_auths(isolated_docker_config, credential_helper):
    credential_helper.write_text(json.dumps({"reg.example.com": ["gina", "from-helper"]}))
    write_config(isolated_docker_config, {
        "credHelpers": {"reg.example.com": "pytest"},
        "auths": {"reg.example.com": {"auth": base64.b64encode(b"gina:from-auths").decode()}},
    })
    assert get_credentials("reg.example.com").password == "from-helper"


def test_missing_helper_and_broken_config_are_clear_errors(isolated_docker_config):
    write_config(isolated_docker_config, {"credsStore": "does-not-exist"})
    with pytest.raises(CredentialsError, match="docker-credential-does-not-exist not found"):
        get_credentials("reg.example.com")
    (isolated_docker_config / "config.json").write_text("{not json")
    with pytest.raises(CredentialsError, match="not valid JSON"):
        get_credentials("reg.example.com")


# -- pybuild login / logout against real registries ------------------------------------

def login(registry, user, password, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    code = main(["login", "-u", user, "--password-stdin", registry])
    return code, capsys.readouterr()


def test_login_logout_against_htpasswd_registry(htpasswd_registry, isolated_docker_config, capsys, monkeypatch):
    code, out = login(htpasswd_registry.host, "alice", USERS["alice"], capsys, monkeypatch)
    assert code == 0 and "Login Succeeded" in out.out
    assert get_credentials(htpasswd_registry.host) == Credentials("alice", USERS["alice"])
    assert main(["logout", htpasswd_registry.host]) == 0
    assert get_credentials(htpasswd_registry.host) is None


def test_login_with_a_wrong_password_fails_cleanly_and_stores_nothing(
        htpasswd_registry, isolated_docker_config, capsys, monkeypatch):
    code, out = login(htpasswd_registry.host, "alice", "wrong-password-123", capsys, monkeypatch)
    assert code != 0
    assert out.err.startswith("error: ") and "Traceback" not in out.err
    assert "wrong-password-123" not in out.err + out.out
    assert not (isolated_docker_config / "config.json").exists()


def test_login_against_token_registry(token_registry, isolated_docker_config, capsys, monkeypatch):
    code, _ = login(token_registry.host, "bob", USERS["bob"], capsys, monkeypatch)
    assert code == 0
    code, out = login(token_registry.host, "bob", "nope-nope", capsys, monkeypatch)
    assert code != 0 and "token server refused" in out.err
