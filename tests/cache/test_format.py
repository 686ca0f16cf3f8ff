"""The cache document is untrusted input: whatever is malformed is dropped (a miss), never used."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest

from builder.cache.format import CacheConfig, ExportedRecord, InvalidCacheError, valid_step_inputs
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
    bad["inputs"]["files"] = ["not", "a", "map"]
    doc["steps"] = [bad, {"id": "not-a-step", "inputs": {}}]
    assert CacheConfig.from_json(json.dumps(doc)).steps == {}


def test_steps_travel_in_their_own_blob_read_only_when_wanted():
    config = CacheConfig.from_json(json.dumps(sample()))
    steps = config.steps_json()
    ref = ("sha256:" + hashlib.sha256(steps).hexdigest(), len(steps))
    document = json.loads(config.to_json(steps_blob=ref))
    assert "steps" not in document and document["stepsBlob"]["digest"] == ref[0]

    imported = CacheConfig.from_json(json.dumps(document))
    assert imported.steps == {} and imported.steps_ref == ref  # not read yet
    assert imported.load_steps(steps)
    assert imported.steps == config.steps and imported.steps_ref is None


@pytest.mark.parametrize("tamper", [lambda b: b + b" ", lambda b: b.replace(b"RUN make", b"RUN evil")])
def test_a_steps_blob_that_is_not_the_one_named_is_not_used(tamper):
    config = CacheConfig.from_json(json.dumps(sample()))
    steps = config.steps_json()
    ref = ("sha256:" + hashlib.sha256(steps).hexdigest(), len(steps))
    imported = CacheConfig.from_json(config.to_json(steps_blob=ref))
    assert not imported.load_steps(tamper(steps))
    assert imported.steps == {}


def test_a_malformed_steps_reference_is_dropped_not_fatal():
    document = sample()
    document["stepsBlob"] = {"digest": "md5:nope", "size": -1}
    imported = CacheConfig.from_json(json.dumps(document))
    assert imported.steps_ref is None and imported.records
    assert any("steps blob" in why for why in imported.dropped)


def test_step_inputs_are_checked_in_depth_when_used():
    # A changed-file map has an entry per file (tens of thousands): its entries are checked when
    # a miss is explained with it, not while a cold build imports the document.
    doc = sample()
    bad = copy.deepcopy(doc["steps"][0])
    bad["inputs"]["files"] = {"a": 1}
    doc["steps"] = [bad]
    steps = CacheConfig.from_json(json.dumps(doc)).steps
    assert not valid_step_inputs(steps[bad["id"]])
    assert valid_step_inputs(CacheConfig.from_json(json.dumps(sample())).steps[bad["id"]])


@pytest.mark.parametrize("document", [b"not json", b"[]", b'{"schemaVersion": 2}', b'{"schemaVersion": 1}',
                                      b'{"schemaVersion": 1, "layers": [], "records": {}}'])
def test_unusable_documents_are_rejected_whole(document):
    with pytest.raises(InvalidCacheError):
        CacheConfig.from_json(document)


NOW = 1_800_000_000.0
DAY = 86400.0


def record(char: str, layer: LayerRef | None = None, exported: float | None = None) -> ExportedRecord:
    state = StepState(key="sha256:" + char * 64, layers=(layer,) if layer else ())
    return ExportedRecord(state.key, state, exported=exported)


def layer(char: str) -> LayerRef:
    return LayerRef(diff_id="sha256:" + char * 64, digest="sha256:d" + char * 63, size=10,
                    media_type="application/vnd.oci.image.layer.v1.tar+zstd")


def test_merge_keeps_older_records_the_new_export_does_not_replace():
    older = CacheConfig.from_json(json.dumps(sample()))
    newer = CacheConfig()
    newer.add(record("c"))
    pruned = newer.merge(older, now=NOW)
    assert set(newer.records) == {"sha256:" + "a" * 64, "sha256:" + "c" * 64}
    assert LAYER.digest in newer.layers
    assert (pruned.kept, pruned.expired, pruned.over_limit) == (1, 0, 0)


def test_export_times_round_trip_and_a_bad_time_is_only_unknown():
    config = CacheConfig()
    config.add(record("a", LAYER))
    config.steps["step:" + "f" * 64] = sample()["steps"][0]["inputs"]
    config.stamp(NOW)
    doc = json.loads(config.to_json())
    assert doc["records"][0]["exported"] == "2027-01-15T08:00:00Z"
    assert doc["steps"][0]["exported"] == "2027-01-15T08:00:00Z"
    parsed = CacheConfig.from_json(json.dumps(doc))
    assert parsed.records["sha256:" + "a" * 64].exported == NOW
    assert parsed.step_exported == {"step:" + "f" * 64: NOW}
    for bad in ["yesterday", 12345, None, "2027-01-15T08:00:00", "9" * 100]:
        doc["records"][0]["exported"] = bad
        (kept,) = CacheConfig.from_json(json.dumps(doc)).records.values()
        assert kept.exported is None  # the record is still used; its age is unknown


def test_a_merge_drops_records_no_build_exported_within_max_age():
    older = CacheConfig()
    older.add(record("a", layer("1"), exported=NOW - 8 * DAY))  # a branch nobody built for 8 days
    older.add(record("b", layer("2"), exported=NOW - 6 * DAY))
    older.steps = {"step:old": {"op": "run"}, "step:new": {"op": "run"}}
    older.step_exported = {"step:old": NOW - 8 * DAY, "step:new": NOW - DAY}
    newer = CacheConfig()
    newer.add(record("c", layer("3")))
    newer.stamp(NOW)
    pruned = newer.merge(older, now=NOW, max_age=7 * DAY)
    assert (pruned.kept, pruned.expired) == (1, 1)
    assert set(newer.records) == {"sha256:" + "b" * 64, "sha256:" + "c" * 64}
    assert newer.records["sha256:" + "b" * 64].exported == NOW - 6 * DAY  # merging is not exporting
    # The dropped record's layer is no longer listed (so the manifest no longer holds it).
    assert set(newer.layers) == {layer("2").digest, layer("3").digest}
    assert set(newer.steps) == {"step:new"}


def test_a_merge_keeps_at_most_max_records_this_exports_first_then_the_newest():
    older = CacheConfig()
    for i, char in enumerate("abcde"):
        older.add(record(char, exported=NOW - (i + 1) * 3600))  # a newest ... e oldest
    newer = CacheConfig()
    newer.add(record("f"))
    newer.add(record("a"))  # replaces the older "a"
    newer.stamp(NOW)
    pruned = newer.merge(older, now=NOW, max_records=4)
    assert set(newer.records) == {"sha256:" + c * 64 for c in "fabc"}
    assert (pruned.kept, pruned.over_limit) == (2, 2)
    # This export alone may exceed the cap: its records are never dropped.
    alone = CacheConfig()
    for char in "fgh":
        alone.add(record(char))
    alone.stamp(NOW)
    alone.merge(older, now=NOW, max_records=2)
    assert set(alone.records) == {"sha256:" + c * 64 for c in "fgh"}


def test_an_old_document_without_times_imports_and_ages_from_the_first_merge():
    doc = sample()
    assert "exported" not in json.dumps(doc)  # sample() never stamps: the format before the field
    older = CacheConfig.from_json(json.dumps(doc))
    assert len(older.records) == 1 and older.dropped == []
    newer = CacheConfig()
    newer.merge(older, now=NOW, max_age=DAY)
    (kept,) = newer.records.values()
    assert kept.exported == NOW  # not dropped at once: it ages from this merge
    again = CacheConfig()
    assert again.merge(CacheConfig.from_json(newer.to_json()), now=NOW + 2 * DAY, max_age=DAY).expired == 1


def test_a_time_in_the_future_counts_as_now():
    older = CacheConfig()
    older.add(record("a", exported=NOW + 1000 * DAY))
    newer = CacheConfig()
    newer.merge(older, now=NOW, max_age=DAY)
    assert newer.records["sha256:" + "a" * 64].exported == NOW
    later = CacheConfig()
    assert later.merge(newer, now=NOW + 2 * DAY, max_age=DAY).expired == 1
