"""The cache document is untrusted input: whatever is malformed is dropped (a miss), never used."""
from __future__ import annotations

import copy
import json

import pytest

from builder.cache.format import CacheConfig, ExportedRecord, InvalidCacheError
from builder.solver.metadata import ConfigState
from builder.solver.state import HistoryEntry, LayerRef, StepState

LAYER = LayerRef(diff_id="sha256:" + "1" * 64, digest="sha256:" + "2" * 64, size=1234,
                 media_type="application/vnd.oci.image.layer.v1.tar+gzip")


def sample() -> dict:
    state = StepState(key="sha256:" + "a" * 64, layers=(LAYER,),
                      config=ConfigState(env=("PATH=/bin",), cmd=("sh",), labels=(("k", "v"),)),
                      history=(HistoryEntry("RUN make", created="2026-01-01T00:00:00Z"),))
    config = CacheConfig()
    config.add(ExportedRecord(state.key, state, 2.5))
    config.steps["step:" + "f" * 64] = {"op": "run", "instruction": "RUN make", "parent": None, "args": {},
                                        "env": {}, "sources": None, "platform": "", "extra": {}, "files": {}}
    return json.loads(config.to_json())


def test_a_document_round_trips():
    parsed = CacheConfig.from_json(json.dumps(sample()))
    (record,) = parsed.records.values()
    assert record.state.layers == (LAYER,)
    assert record.state.config.labels == (("k", "v"),)
    assert record.state.history[0].created == "2026-01-01T00:00:00Z"
    assert record.duration_s == 2.5
    assert parsed.dropped == [] and len(parsed.steps) == 1


@pytest.mark.parametrize("poison", [
    lambda d: d["records"][0].update(key="sha256:short"),
    lambda d: d["records"][0].update(key="sha256:" + "b" * 64),  # does not match the state's key
    lambda d: d["records"][0]["state"]["layers"][0].update(size=999),  # not the listed size
    lambda d: d["records"][0]["state"]["layers"][0].update(digest="sha256:" + "3" * 64),  # not listed
    lambda d: d["records"][0]["state"]["layers"][0].update(media_type="text/html"),
    lambda d: d["records"][0]["state"]["layers"][0].update(diff_id="sha256:" + "4" * 64),
    lambda d: d["records"][0]["state"]["config"].update(env="PATH=/bin"),  # a string, not a list
    lambda d: d["records"][0]["state"]["config"].update(cmd=[1, 2]),
    lambda d: d["records"][0]["state"]["config"].update(healthcheck=[["CMD"], "1s", None, None, None, None]),
    lambda d: d["records"][0]["state"]["config"].update(rm_rf=True),  # unknown field
    lambda d: d["records"][0]["state"]["history"].append({"created_by": 5}),
    lambda d: d["records"][0]["state"].update(layers="all"),
    lambda d: d["records"][0].update(state=None),
    lambda d: d["layers"][0].update(size=-1),  # the listed layer itself is malformed
])
def test_poisoned_records_are_dropped(poison):
    doc = sample()
    poison(doc)
    parsed = CacheConfig.from_json(json.dumps(doc))
    assert parsed.records == {}
    assert parsed.dropped


def test_malformed_step_inputs_are_ignored():
    doc = sample()
    bad = copy.deepcopy(doc["steps"][0])
    bad["inputs"]["files"] = {"a": 1}
    doc["steps"] = [bad, {"id": "not-a-step", "inputs": {}}]
    assert CacheConfig.from_json(json.dumps(doc)).steps == {}


@pytest.mark.parametrize("document", [b"not json", b"[]", b'{"schemaVersion": 2}', b'{"schemaVersion": 1}',
                                      b'{"schemaVersion": 1, "layers": [], "records": {}}'])
def test_unusable_documents_are_rejected_whole(document):
    with pytest.raises(InvalidCacheError):
        CacheConfig.from_json(document)


def test_merge_keeps_older_records_the_new_export_does_not_replace():
    older = CacheConfig.from_json(json.dumps(sample()))
    newer = CacheConfig()
    state = StepState(key="sha256:" + "c" * 64)
    newer.add(ExportedRecord(state.key, state))
    newer.merge(older)
    assert set(newer.records) == {"sha256:" + "a" * 64, "sha256:" + "c" * 64}
    assert LAYER.digest in newer.layers
