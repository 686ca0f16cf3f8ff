"""config.json parsing: what is honoured, what is refused, and that nothing else escapes."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings, strategies as st

from builder.runtime import config
from builder.runtime.errors import ConfigError


def test_runc_default_parses(runc_spec) -> None:
    spec = config.parse(runc_spec)
    assert spec.process.args == ["sh"] and spec.root_readonly and spec.hostname == "runc"
    assert [ns.type for ns in spec.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert spec.process.capabilities.bounding == sum(1 << n for n in (29, 5, 10))   # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert spec.resources.devices[0].allow is False


def test_default_spec_is_runc_spec(runc_spec) -> None:
    assert config.default_spec() == runc_spec


def test_unknown_capability_is_refused(runc_spec) -> None:
    doc = copy.deepcopy(runc_spec)
    doc["process"]["capabilities"]["bounding"].append("CAP_NOT_A_THING")
    with pytest.raises(ConfigError, match="unknown capability 'CAP_NOT_A_THING'"):
        config.parse(doc)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
PATHS = [("process",), ("process", "args"), ("process", "user"), ("process", "user", "uid"), ("process", "env"),
         ("process", "capabilities"), ("process", "rlimits"), ("process", "cwd"), ("root",), ("root", "path"),
         ("mounts",), ("linux",), ("linux", "namespaces"), ("linux", "resources"), ("linux", "uidMappings"),
         ("linux", "devices"), ("linux", "sysctl"), ("hostname",), ("annotations",), ("ociVersion",)]


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(PATHS), value=JSON)
def test_any_mutation_is_accepted_or_refused_cleanly(runc_spec, path, value) -> None:
    doc = copy.deepcopy(runc_spec)
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[path[-1]] = value
    try:
        spec = config.parse(json.loads(json.dumps(doc)))
    except ConfigError as e:
        assert str(e).startswith("config.json") and "\n" not in str(e)
    else:
        assert spec.process.args and isinstance(spec.root_path, str)
        assert spec.hostname is None or isinstance(spec.hostname, str)
        assert all(isinstance(a, str) for a in spec.process.args)


def test_settings_that_ask_for_nothing_are_accepted(runc_spec) -> None:
    doc = copy.deepcopy(runc_spec)
    doc["linux"]["resources"].update(cpu={"shares": 0, "quota": 0}, blockIO={}, hugepageLimits=[])
    assert config.parse(doc).resources.devices
