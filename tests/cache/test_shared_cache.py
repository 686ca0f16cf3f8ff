"""A CI job on an empty machine reuses another machine's build through an exported cache.

Machine A builds and exports its cache (registry, local directory or inline); machine B starts
from an empty store and imports it. A RUN that fetches from a counting HTTP server proves which
steps really ran; image ids prove the results are the same.
"""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from builder.cache.format import STEPS_MEDIA_TYPE
from builder.errors import PybuildError
from builder.image import mediatypes as mt
from tests.build.conftest import image_tree
from tests.cache.conftest import blob_files

TWO_STAGES = """\
FROM {base} AS deps
COPY deps.txt /deps.txt
RUN wget -q -O /fetched {url} && cat /deps.txt >> /fetched
FROM {base} AS app
COPY --from=deps /fetched /fetched
COPY src/ /src/
RUN wget -q -O /ran {url}
CMD ["cat", "/fetched"]
"""


def checkout(builder, base_ref, url, dockerfile=TWO_STAGES):
    builder.write("Dockerfile", dockerfile.format(base=base_ref, url=url))
    builder.write("deps.txt", "numpy==2.0\n")
    builder.write("src/main.py", "print('hello')\n")


def statuses(report):
    return [s.status for s in report.steps]


def layer_digests(builder, image_id):
    store = builder.store()
    try:
        digest = next(i.digest for i in store.list_images() if i.id == image_id)
        return {layer.digest[7:] for layer in store.get_image(digest).layers}
    finally:
        store.close()


def test_registry_cache_mode_max_rebuilds_nothing_on_an_empty_machine(machines, registry, base_ref, counter, tmp_path):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache = f"{registry.host}/cache/app:buildcache"
    image_a, report_a = a.build(tags=[f"{registry.host}/app/web:1"], outputs=["type=registry"],
                                cache_to=[f"type=registry,ref={cache},mode=max"])
    assert counter.hits == 2 and statuses(report_a).count("DONE") == 6

    log_start = registry.log_path.stat().st_size
    image_b, report_b = b.build(tags=[f"{registry.host}/app/web:2"], outputs=["type=registry"],
                                cache_from=[f"type=registry,ref={cache}"])
    assert statuses(report_b) == ["CACHED"] * 8
    assert counter.hits == 2, "no RUN may execute on machine B"
    assert image_b == image_a
    # Lazy: B pushed to a registry that had every layer, so it downloaded none of them ...
    assert not layer_digests(b, image_b) & blob_files(b.root)
    # ... nor the steps blob (what explains misses: B had none).
    manifest = requests.get(f"http://{registry.host}/v2/cache/app/manifests/buildcache",
                            headers={"Accept": mt.OCI_MANIFEST}, timeout=10).json()
    steps_blob = next(d["digest"] for d in manifest["layers"] if d["mediaType"] == STEPS_MEDIA_TYPE)
    time.sleep(0.3)  # the registry logs a request after answering it
    served = registry.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "/v2/cache/app/manifests/buildcache" in served
    assert steps_blob not in served
    # The cache manifest lists the layers, so the registry vouches for them: no HEAD each.
    assert "HEAD /v2/cache/app/blobs/" not in served
    # The layers are still there when something needs them: unpacking fetches them (verified).
    tree = image_tree(b, image_b, tmp_path / "tree")
    assert (tree / "fetched").read_text() == "run 1\nnumpy==2.0\n"
    assert (tree / "src" / "main.py").read_text() == "print('hello')\n"


def test_registry_cache_then_a_change_in_the_last_stage_reruns_only_that_stage(machines, registry, base_ref, counter):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache = f"{registry.host}/cache/partial:main"
    a.build(cache_to=[f"type=registry,ref={cache},mode=max"])
    assert counter.hits == 2
    b.write("src/main.py", "print('changed')\n")
    _, report = b.build(cache_from=[cache])  # a bare ref means type=registry
    by_stage = {}
    for step in report.steps:
        by_stage.setdefault(step.stage, []).append(step.status)
    assert by_stage["deps"] == ["CACHED", "CACHED", "CACHED"]
    assert by_stage["app"] == ["CACHED", "CACHED", "DONE", "DONE", "DONE"]
    assert counter.hits == 3, "only the last stage's RUN runs again"
    missed = next(s for s in report.steps if s.instruction.startswith("COPY src/"))
    assert missed.miss_reason.kind == "files"


def test_mode_min_exports_only_the_final_image_steps(machines, registry, base_ref, counter):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache = f"{registry.host}/cache/min:main"
    a.build(cache_to=[f"type=registry,ref={cache}"])  # mode=min is the default
    _, report = b.build(cache_from=[f"type=registry,ref={cache}"])
    deps = [s.status for s in report.steps if s.stage == "deps"]
    app = [s.status for s in report.steps if s.stage == "app"]
    assert deps == ["CACHED", "DONE", "DONE"]  # the builder stage was not exported
    assert app == ["CACHED"] * 5
    assert counter.hits == 3


def test_local_cache_directory_round_trip(machines, base_ref, counter, tmp_path):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache_dir = tmp_path / "ci-cache"
    image_a, _ = a.build(cache_to=[f"type=local,dest={cache_dir},mode=max"])
    assert json.loads((cache_dir / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((cache_dir / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    image_b, report = b.build(cache_from=[f"type=local,src={cache_dir}"])
    assert statuses(report) == ["CACHED"] * 8
    assert counter.hits == 2
    assert image_b == image_a


def test_inline_cache_travels_in_the_pushed_image(machines, registry, base_ref, counter):
    a, b = machines("a"), machines("b")
    single = "FROM {base}\nCOPY deps.txt /deps.txt\nRUN wget -q -O /ran {url}\nENV MODE=prod\n"
    checkout(a, base_ref, counter.url, single)
    checkout(b, base_ref, counter.url, single)
    ref = f"{registry.host}/app/inline:1"
    image_a, _ = a.build(tags=[ref], outputs=["type=registry"], cache_to=["type=inline"])
    assert "pybuild.cache.v1" in a.config(image_a)
    image_b, report = b.build(tags=[ref], outputs=["type=registry"], cache_to=["type=inline"],
                              cache_from=[f"type=registry,ref={ref}"])
    assert statuses(report) == ["CACHED"] * 4
    assert counter.hits == 1
    assert image_b == image_a


def test_exports_of_two_branches_merge_in_one_ref(machines, registry, base_ref, counter):
    cache = f"{registry.host}/cache/merge:shared"
    main, feature, fresh = machines("main"), machines("feature"), machines("fresh")
    checkout(main, base_ref, counter.url)
    checkout(feature, base_ref, counter.url, "FROM {base}\nCOPY src/ /src/\nRUN wget -q -O /f {url}\n")
    checkout(fresh, base_ref, counter.url)
    main.build(cache_to=[f"type=registry,ref={cache},mode=max"])
    feature.build(cache_to=[f"type=registry,ref={cache},mode=max"])
    hits = counter.hits
    _, report = fresh.build(cache_from=[cache])
    assert statuses(report) == ["CACHED"] * 8, "the feature branch's export kept main's records"
    assert counter.hits == hits
    # merge=false replaces the records instead.
    feature.build(cache_to=[f"type=registry,ref={cache},mode=max,merge=false"])
    other = machines("other")
    checkout(other, base_ref, counter.url)
    _, report = other.build(cache_from=[cache])
    assert "DONE" in statuses(report)


def test_a_missing_cache_source_is_a_warning_not_an_error(machines, registry, base_ref, counter):
    b = machines("b")
    checkout(b, base_ref, counter.url)
    _, report = b.build(cache_from=[f"type=registry,ref={registry.host}/cache/nothing:here"])
    assert statuses(report).count("DONE") == 6
    assert any("does not exist yet" in w for w in report.warnings)


def test_tampered_local_cache_records_and_layers_are_misses(machines, base_ref, counter, tmp_path):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache_dir = tmp_path / "ci-cache"
    a.build(cache_to=[f"type=local,dest={cache_dir},mode=max"])
    index = json.loads((cache_dir / "index.json").read_text())
    manifest = json.loads((cache_dir / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    # Flip a byte in every layer the build made (all but the base image's), keeping sizes:
    # their digests no longer match.
    base = max(manifest["layers"], key=lambda d: d["size"])
    tampered = [d["digest"][7:] for d in manifest["layers"] if d != base]
    for hexdigest in tampered:
        path = cache_dir / "blobs" / "sha256" / hexdigest
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    image_b, report = b.build(cache_from=[f"type=local,src={cache_dir}"])
    assert statuses(report).count("DONE") == 6, "records needing a tampered layer were not used"
    tree = image_tree(b, image_b, tmp_path / "tree")
    assert (tree / "src" / "main.py").read_text() == "print('hello')\n"
    # B rebuilt those layers itself (builds are reproducible, so some digests are the same);
    # every blob in its store is what its digest says.
    for name in blob_files(b.root):
        assert hashlib.sha256((b.root / "blobs" / "sha256" / name).read_bytes()).hexdigest() == name


def test_bad_cache_flags_are_clear_errors(machines, base_ref, counter):
    b = machines("b")
    checkout(b, base_ref, counter.url)
    for flags, message in [
        ({"cache_to": ["type=s3,bucket=x"]}, "type=s3 is not supported"),
        ({"cache_to": ["type=local"]}, "needs dest=DIR"),
        ({"cache_from": ["type=local,src=/x,dest=/y"]}, "does not take dest"),
        ({"cache_to": ["type=registry,ref=r/x,mode=all"]}, "mode=all"),
        ({"cache_from": ["type=inline"]}, "not a source"),
    ]:
        with pytest.raises(PybuildError, match=message):
            b.build(**flags)
