"""``pybuild cache ls/show``, ``system df -v`` and ``system prune`` flags, on the cache of real builds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.cli import main
from builder.image import mediatypes as mt
from builder.store import ContentStore
from builder.store.usage import quick_size
from tests.build.conftest import Builder, bbuilder, builder  # noqa: F401  (fixtures)
from tests.store.conftest import busybox_archive, store  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]

DOCKERFILE = """FROM busybox
ARG N=0
COPY data.bin /data.bin
RUN --mount=type=cache,target=/cache echo $N >> /cache/log && cp /cache/log /log
"""


def cli(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(root), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and lines and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert len(lines) <= 2, err
    for word in words:
        assert word in lines[0], err


@pytest.fixture
def cached(bbuilder: Builder) -> Builder:
    """Two builds (N=1 then N=2) tagged app:1 and app:2: six cache records and a cache mount."""
    for n in (1, 2):
        (bbuilder.context / "data.bin").write_bytes(os.urandom(50_000) if n == 1 else b"same\n")
        bbuilder.build(DOCKERFILE, tags=[f"app:{n}"], build_args={"N": str(n)})
    return bbuilder


def records(capsys, root: Path, *filters: str) -> list[dict]:
    args = [a for f in filters for a in ("--filter", f)]
    code, out, err = cli(capsys, root, "cache", "ls", "--format", "json", *args)
    assert code == 0, err
    return json.loads(out)


def test_cache_ls_lists_the_records_and_their_steps(cached: Builder, capsys):
    root = cached.root
    code, out, _ = cli(capsys, root, "cache", "ls")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["CACHE", "ID", "SIZE", "SHARED", "CREATED", "LAST", "USED",
                                              "HITS", "STEP"]
    assert len(lines) == 1 + 6 and not any("step:" in line for line in lines)
    assert sum("COPY data.bin /data.bin" in line for line in lines) == 2
    assert sum("Dockerfile:4 RUN --mount=type=cache" in line for line in lines) == 2
    docs = records(capsys, root)
    assert [d["last_used"] for d in docs] == sorted(d["last_used"] for d in docs)  # least recently used first
    first_copy = next(d for d in docs if d["op"] == "copy")
    assert first_copy["size"] > 100_000  # 50kB of noise: the blob and its snapshot
    own = [lr for lr in first_copy["layers"] if lr["own"]]
    assert len(own) == 1 and own[0]["where"] == "present"
    newest_copy = [d for d in docs if d["op"] == "copy"][-1]
    assert set(newest_copy["inputs"]["files"]) == {"data.bin"}  # the inputs of its last build
    assert all(d["size"] == 0 for d in docs if d["op"] == "meta")  # ARG adds no layer
    assert [d["op"] for d in records(capsys, root, "op=run")] == ["run", "run"]
    assert len(records(capsys, root, "step=copy data.bin")) == 2
    key = first_copy["key"]
    assert [d["key"] for d in records(capsys, root, f"id={key[7:19]}")] == [key]
    assert records(capsys, root, "until=1h") == [] and len(records(capsys, root, "since=1h")) == 6
    with ContentStore(root) as store:
        store.index.query("UPDATE cache SET last_used = last_used - 7200 WHERE key = ?", (key,))
    assert [d["key"] for d in records(capsys, root, "until=1h")] == [key]
    assert records(capsys, root, "imported=true") == []


def test_cache_show_tells_step_inputs_parent_and_layers(cached: Builder, capsys):
    root = cached.root
    run = records(capsys, root, "op=run")[-1]
    code, out, _ = cli(capsys, root, "cache", "show", run["key"][7:19])
    assert code == 0
    assert f"Key:            {run['key']}" in out
    assert ("Step:           Dockerfile:4 RUN --mount=type=cache,target=/cache echo $N >> /cache/log "
            "&& cp /cache/log /log") in out
    assert "environment:  N=2" in out and "Hits:           0" in out
    assert "(Dockerfile:3 COPY data.bin /data.bin)" in out  # the parent record, by its step
    assert out.count("(this step's)") == 1 and "Layers:         3" in out
    copy = records(capsys, root, "op=copy")[-1]
    code, out, _ = cli(capsys, root, "cache", "show", copy["key"], "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["key"] == copy["key"] and doc["parent_step"] == "Dockerfile:2 ARG N=0"
    assert set(doc["inputs"]["files"]) == {"data.bin"}
    # A cache hit counts.
    cached.build(DOCKERFILE, tags=["app:2"], build_args={"N": "2"})
    assert json.loads(cli(capsys, root, "cache", "show", copy["key"], "--format", "json")[1])["hits"] == 1


def test_cache_show_wants_one_record(cached: Builder, capsys):
    root = cached.root
    with ContentStore(root) as store:  # two keys sharing a prefix no real key has
        store.cache_put("sha256:" + "abcd0" + "0" * 59, {"note": "one"})
        store.cache_put("sha256:" + "abcd1" + "0" * 59, {"note": "two"})
        real = {k for k, _, _ in store.index.cache_keys()}
    assert not any(k.startswith("sha256:abcd") for k in real - {"sha256:abcd0" + "0" * 59,
                                                                "sha256:abcd1" + "0" * 59})
    code, _, err = cli(capsys, root, "cache", "show", "abcd")
    assert_one_line_error(code, err, "ambiguous", "2 records match")
    code, out, _ = cli(capsys, root, "cache", "show", "sha256:abcd1")
    assert code == 0 and "Step:           (unknown step)" in out and "Inputs:         not recorded" in out
    unused = next(c for c in "0123456789abcdef" if not any(k[7:].startswith(c) for k in real | {"sha256:a"}))
    code, _, err = cli(capsys, root, "cache", "show", unused * 8)
    assert_one_line_error(code, err, "no build-cache record matches")
    code, _, err = cli(capsys, root, "cache", "show", "step:")
    assert_one_line_error(code, err, "not a cache key")


@pytest.mark.parametrize("args, words", [
    (["cache"], ["ls or show"]),
    (["cache", "ls", "--filter", "colour=blue"], ["unsupported filter 'colour'"]),
    (["cache", "ls", "--filter", "shared=maybe"], ["expected true or false"]),
    (["cache", "ls", "--filter", "until=soon"], ["bad duration 'soon'"]),
    (["cache", "ls", "--filter", "op"], ["expected KEY=VALUE"]),
    (["system", "prune", "--keep-storage", "10 potatoes"], ["bad --keep-storage '10 potatoes'"]),
    (["system", "prune", "--filter", "label=x"], ["unsupported filter"]),
])
def test_bad_input_is_one_clear_line(capsys, tmp_path, args, words):
    code, _, err = cli(capsys, tmp_path / "root", *args)
    assert_one_line_error(code, err, *words)


def test_system_df_verbose_lists_cache_records_mounts_and_the_gc_limit(cached: Builder, capsys, monkeypatch):
    root = cached.root
    monkeypatch.setenv("PYBUILD_GC_KEEP_STORAGE", "50MB")
    code, out, _ = cli(capsys, root, "system", "df")
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and rows["Build cache"][2] == "7"  # six records and a cache mount
    code, out, _ = cli(capsys, root, "system", "df", "-v")
    assert code == 0
    table = out[out.index("CACHE ID"):].splitlines()
    assert sum("COPY data.bin /data.bin" in line for line in table) == 2
    mounts = out[out.index("CACHE MOUNT"):].splitlines()
    assert len(mounts[1].split()[0]) == 12 and mounts[1].split()[1] == "4B"  # "1\n2\n"
    assert "automatic GC keeps it under 50MB (PYBUILD_GC_KEEP_STORAGE)" in out
    monkeypatch.setenv("PYBUILD_GC_KEEP_STORAGE", "off")
    assert "automatic GC keeps it under off" in cli(capsys, root, "system", "df", "-v")[1]
    monkeypatch.delenv("PYBUILD_GC_KEEP_STORAGE")
    (root / "config.json").write_text('{"gc": {"keepStorage": 12}')  # broken JSON
    code, out, _ = cli(capsys, root, "system", "df", "-v")
    assert code == 0 and "automatic GC is skipped: " in out and "config.json: not valid JSON" in out


def test_prune_until_keep_storage_and_all(cached: Builder, capsys):
    root = cached.root
    first = [d["key"] for d in records(capsys, root)][:3]  # the N=1 build's records
    with ContentStore(root) as store:
        for key in first:
            store.index.query("UPDATE cache SET last_used = last_used - 7200 WHERE key = ?", (key,))
    code, out, _ = cli(capsys, root, "system", "prune", "--filter", "until=1h")
    assert code == 0 and "Deleted build cache entries: 3" in out
    assert {d["key"] for d in records(capsys, root)}.isdisjoint(first)
    # Named images keep their layers: dropping the cache alone cannot get under 1 byte.
    code, out, _ = cli(capsys, root, "system", "prune", "--keep-storage", "1B", "-f")
    assert code == 0 and "Deleted build cache entries: 3" in out and "Deleted cache mount:" in out
    assert "kept under 1B where named images allow" in out
    assert records(capsys, root) == [] and not any((root / "cache" / "mounts").iterdir())
    assert cli(capsys, root, "rmi", "app:1")[0] == 0
    code, out, _ = cli(capsys, root, "system", "prune", "-a")
    assert code == 0 and "Deleted blob" not in out  # rmi took the image's blobs already...
    assert "Deleted snapshot" in out  # ...and left its snapshots to prune


def test_keep_storage_drops_least_recently_used_first(cached: Builder, capsys):
    root = cached.root
    docs = records(capsys, root)
    assert cli(capsys, root, "rmi", "app:1")[0] == 0  # the N=1 build's layers: held by its cache only
    with ContentStore(root) as store:
        store.prune()  # nothing unreferenced left: all the store holds is held by something
        size = quick_size(store)
    code, out, _ = cli(capsys, root, "system", "prune", "--keep-storage", str(size - 1))
    assert code == 0 and "Deleted build cache entries: 3" in out
    # ARG (holds busybox only), COPY (its layer is held by the RUN after it too), then RUN,
    # which frees both layers; the newer build's records and the cache mount (used by it) stay.
    assert [d["key"] for d in records(capsys, root)] == [d["key"] for d in docs[3:]]
    assert any((root / "cache" / "mounts").iterdir())


def test_a_bad_gc_setting_warns_and_the_build_still_succeeds(bbuilder: Builder, tmp_path):
    (bbuilder.context / "data.bin").write_bytes(b"x")
    bbuilder.write("Dockerfile", DOCKERFILE)
    env = dict(os.environ, PYBUILD_GC_KEEP_STORAGE="lots")
    proc = subprocess.run([sys.executable, "-m", "builder", "--root", str(bbuilder.root), "build", "-q",
                           str(bbuilder.context)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("sha256:"), proc.stderr
    assert "warning: automatic GC skipped: bad size in PYBUILD_GC_KEEP_STORAGE 'lots'" in proc.stderr


def test_lazy_blobs_cost_nothing_and_their_rows_go_with_what_needed_them(store, capsys):
    lazy = "sha256:" + "1" * 64
    orphan = "sha256:" + "2" * 64
    source = {"type": "local", "dir": "/nonexistent/layout"}
    store.add_remote_blobs([(lazy, 5_000_000, mt.OCI_LAYER_GZIP), (orphan, 7, mt.OCI_LAYER_GZIP)], source)
    store.record_layer(lazy, "sha256:" + "3" * 64, mt.OCI_LAYER_GZIP)
    state = {"layers": [{"diff_id": "sha256:" + "3" * 64, "digest": lazy, "size": 5_000_000,
                         "media_type": mt.OCI_LAYER_GZIP}], "history": [{"created_by": "RUN make"}]}
    store.cache_put("sha256:" + "4" * 64, {"state": state, "imported_from": "registry example/cache"}, [lazy])
    report = store.prune()
    assert report.remote_blobs == 1 and store.index.remote_blob(orphan) is None
    assert store.is_lazy_blob(lazy)
    code, out, _ = cli(capsys, store.root, "cache", "ls", "--format", "json", "--filter", "imported=true")
    (doc,) = json.loads(out)
    assert doc["size"] == 0 and doc["layers"][0]["where"] == "lazy" and doc["step"] == "RUN make"
    assert store.prune(cache=True).remote_blobs == 1 and not store.has_content(lazy)
