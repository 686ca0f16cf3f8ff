"""builder.runtime.record: the lean dataclasses behave as the standard ones do, for what the runtime uses."""
from __future__ import annotations

import dataclasses
import json

import pytest

from builder.runtime import record
from builder.runtime.config import parse
from builder.runtime.state import ContainerState


def _pair(frozen: bool = False):
    """The same class declared with the standard module and with ours."""
    made = []
    for module in (dataclasses, record):
        @module.dataclass(frozen=frozen)
        class Point:
            x: int
            y: int = 2
            tags: list[str] = module.field(default_factory=list)
        made.append(Point)
    return made


@pytest.mark.parametrize("args,kwargs", [
    ((1,), {}), ((1, 5), {}), ((1,), {"tags": ["a"]}), ((), {"x": 3, "y": 4}), ((1, 2, ["t"]), {}),
])
def test_same_instances_as_dataclasses(args, kwargs) -> None:
    std, ours = _pair()
    a, b = std(*args, **kwargs), ours(*args, **kwargs)
    assert repr(a) == repr(b)
    assert dataclasses.asdict(a) == record.asdict(b)
    assert ours(*args, **kwargs) == b and b != ours(99)


@pytest.mark.parametrize("args,kwargs", [
    ((), {}), ((1, 2, [], 4), {}), ((1,), {"x": 1}), ((1,), {"z": 1}),
])
def test_same_errors_as_dataclasses(args, kwargs) -> None:
    std, ours = _pair()
    with pytest.raises(TypeError):
        std(*args, **kwargs)
    with pytest.raises(TypeError):
        ours(*args, **kwargs)


def test_factories_are_per_instance_and_not_class_attributes() -> None:
    _, ours = _pair()
    a, b = ours(1), ours(1)
    a.tags.append("x")
    assert b.tags == [] and "tags" not in vars(ours)
    with pytest.raises(TypeError):     # mutable and compared by value: unhashable
        hash(a)


def test_frozen() -> None:
    made = []
    for module in (dataclasses, record):
        @module.dataclass(frozen=True)
        class User:
            uid: int
            groups: tuple[int, ...] = module.field(default_factory=tuple)
        made.append(User)
    std, ours = made
    b = ours(1, (2, 3))
    with pytest.raises(AttributeError):
        b.uid = 2
    assert hash(b) == hash(ours(1, (2, 3))) and {b, ours(1, (2, 3))} == {b}
    assert repr(b) == repr(std(1, (2, 3))) and b != ours(1)


def test_default_order_checked() -> None:
    with pytest.raises(TypeError):
        @record.dataclass
        class Bad:
            a: int = 1
            b: int


def test_runtime_records_round_trip() -> None:
    """What the runtime stores (state.json) and parses (config.json) survives asdict and JSON."""
    state = ContainerState("c1", 42, "/b", "/b/rootfs", "now", "root", 7, annotations={"k": "v"},
                           cgroups={"/sys/fs/cgroup/pids": "/c1"}, namespaces=["pid", "mount"])
    back = ContainerState(**json.loads(json.dumps(record.asdict(state))))
    assert back == state
    from builder.runtime.config import default_spec
    spec = parse(default_spec())
    assert spec.process.capabilities.bounding and spec.namespace("mount") is not None
    assert parse(default_spec()) == spec
