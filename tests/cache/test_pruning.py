"""Merged cache records do not pile up forever: a merge drops records no build exported within
``max-age`` (default 168h) and keeps at most ``max-records``; documents written before records
carried an export time still import, and age from the first merge that sees them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from builder.cache.format import STEPS_MEDIA_TYPE
import builder.cache.exporter as exporter
from tests.cache.test_shared_cache import checkout, statuses

DAY = 86400.0
T0 = 1_800_000_000.0
FEATURE = "FROM {base}\nCOPY src/ /src/\nRUN wget -q -O /f {url}\n"


def at(monkeypatch, when: float) -> None:
    """Exports from now on happen at ``when`` (the exporter's clock only)."""
    monkeypatch.setattr(exporter, "_now", lambda: when)


def read_layout(cache_dir: Path) -> tuple[dict, dict]:
    """(manifest, cache document) of the ``latest`` tag of a local cache, in the one-document
    form (the steps blob read into ``steps``, and not among the manifest's layers)."""
    index = json.loads((cache_dir / "index.json").read_text())
    blobs = cache_dir / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    doc = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    ref = doc.pop("stepsBlob", None)
    if ref is not None:
        assert ref in manifest["layers"], "the steps blob is kept alive by the manifest"
        doc["steps"] = json.loads((blobs / ref["digest"][7:]).read_text())["steps"]
    manifest["layers"] = [d for d in manifest["layers"] if d["mediaType"] != STEPS_MEDIA_TYPE]
    return manifest, doc


def write_document(cache_dir: Path, document: dict) -> None:
    """Replace the local cache's document (a new config blob, manifest and index entry)."""
    manifest, _ = read_layout(cache_dir)
    blobs = cache_dir / "blobs" / "sha256"
    data = json.dumps(document).encode()
    (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    manifest["config"].update(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data))
    mdata = json.dumps(manifest).encode()
    (blobs / hashlib.sha256(mdata).hexdigest()).write_bytes(mdata)
    index = json.loads((cache_dir / "index.json").read_text())
    index["manifests"][0].update(digest="sha256:" + hashlib.sha256(mdata).hexdigest(), size=len(mdata))
    (cache_dir / "index.json").write_text(json.dumps(index))


def test_records_no_build_exported_within_max_age_are_dropped(machines, registry, base_ref, counter, monkeypatch):
    cache = f"{registry.host}/cache/prune-age:shared"
    main, feature = machines("main"), machines("feature")
    checkout(main, base_ref, counter.url)
    checkout(feature, base_ref, counter.url, FEATURE)
    at(monkeypatch, T0)
    main.build(cache_to=[f"type=registry,ref={cache},mode=max"])
    at(monkeypatch, T0 + 6 * DAY)
    feature.build(cache_to=[f"type=registry,ref={cache},mode=max"])
    fresh = machines("fresh")
    checkout(fresh, base_ref, counter.url)
    _, report = fresh.build(cache_from=[cache])
    assert statuses(report) == ["CACHED"] * 8, "6 days old: main's records are still there"

    # Two more days: main's records were exported 8 days ago, past the default 168h.
    at(monkeypatch, T0 + 8 * DAY)
    feature.build(cache_to=[f"type=registry,ref={cache},mode=max"])
    later = machines("later")
    checkout(later, base_ref, counter.url)
    _, report = later.build(cache_from=[cache])
    assert statuses(report).count("DONE") == 6, "main's records were dropped"


def test_max_age_and_max_records_bound_a_local_cache(machines, base_ref, counter, monkeypatch, tmp_path):
    cache_dir = tmp_path / "ci-cache"
    main, feature = machines("main"), machines("feature")
    checkout(main, base_ref, counter.url)
    checkout(feature, base_ref, counter.url, FEATURE)
    at(monkeypatch, T0)
    main.build(cache_to=[f"type=local,dest={cache_dir},mode=max"])
    _, main_doc = read_layout(cache_dir)
    main_keys = {r["key"] for r in main_doc["records"]}
    main_layers = {layer["digest"] for layer in main_doc["layers"]}
    assert {r["exported"] for r in main_doc["records"]} == {"2027-01-15T08:00:00Z"}

    at(monkeypatch, T0 + 3 * DAY)
    feature.build(cache_to=[f"type=local,dest={cache_dir},mode=max,max-age=2d"])
    manifest, doc = read_layout(cache_dir)
    feature_keys = {r["key"] for r in doc["records"]}
    assert not feature_keys & main_keys, "older than max-age=2d: dropped"
    assert {r["exported"] for r in doc["records"]} == {"2027-01-18T08:00:00Z"}
    # Their layers are no longer listed (the manifest keeps only what kept records use) ...
    kept = {layer["digest"] for layer in doc["layers"]}
    assert {d["digest"] for d in manifest["layers"]} == kept
    assert main_layers - kept
    # ... and the steps that explained their misses went with them.
    assert all(s["exported"] == "2027-01-18T08:00:00Z" for s in doc["steps"])

    # max-records: this export's records first, then the most recently exported ones.
    at(monkeypatch, T0 + 4 * DAY)
    main.build(cache_to=[f"type=local,dest={cache_dir},mode=max"])
    _, doc = read_layout(cache_dir)
    assert {r["key"] for r in doc["records"]} == main_keys | feature_keys
    at(monkeypatch, T0 + 5 * DAY)
    main.build(cache_to=[f"type=local,dest={cache_dir},mode=max,max-records={len(main_keys) + 1}"])
    _, doc = read_layout(cache_dir)
    assert len(doc["records"]) == len(main_keys) + 1
    assert main_keys <= {r["key"] for r in doc["records"]}


def test_a_document_without_export_times_imports_and_is_kept_by_the_next_merge(
        machines, base_ref, counter, monkeypatch, tmp_path):
    cache_dir = tmp_path / "ci-cache"
    a = machines("a")
    checkout(a, base_ref, counter.url)
    at(monkeypatch, T0)
    image_a, _ = a.build(cache_to=[f"type=local,dest={cache_dir},mode=max"])
    _, doc = read_layout(cache_dir)
    for entry in doc["records"] + doc["steps"]:
        del entry["exported"]  # the format before export times existed
    write_document(cache_dir, doc)

    b = machines("b")
    checkout(b, base_ref, counter.url)
    image_b, report = b.build(cache_from=[f"type=local,src={cache_dir}"])
    assert statuses(report) == ["CACHED"] * 8 and image_b == image_a
    assert not report.warnings

    # A merge a year later keeps them (their age is unknown: it starts now) and stamps them.
    feature = machines("feature")
    checkout(feature, base_ref, counter.url, FEATURE)
    at(monkeypatch, T0 + 365 * DAY)
    feature.build(cache_to=[f"type=local,dest={cache_dir},mode=max"])
    _, merged = read_layout(cache_dir)
    assert {r["key"] for r in doc["records"]} <= {r["key"] for r in merged["records"]}
    assert {r["exported"] for r in merged["records"]} == {"2028-01-15T08:00:00Z"}
