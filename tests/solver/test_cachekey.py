"""Cache keys are content-based, and a miss is explained by what changed."""
from __future__ import annotations

from builder.solver.cachekey import KeyInputs, cache_key, explain_miss


def run_step(**kw) -> KeyInputs:
    base = dict(op="run", instruction="RUN make", parent="sha256:p", args=(("V", "1"),),
                env=(("PATH", "/bin"),), platform="linux/amd64")
    base.update(kw)
    return KeyInputs(**base)


def copy_step(files: dict[str, str], **kw) -> KeyInputs:
    import hashlib
    digest = "sha256:" + hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
    base = dict(op="copy", instruction="COPY . /app", parent="sha256:p", sources=digest, files=files)
    base.update(kw)
    return KeyInputs(**base)


def test_key_is_stable_and_sensitive():
    a = run_step()
    assert cache_key(a) == cache_key(run_step()) and cache_key(a).startswith("sha256:")
    for change in (dict(instruction="RUN make all"), dict(parent="sha256:q"), dict(args=(("V", "2"),)),
                   dict(env=()), dict(platform="linux/arm64"), dict(extra=(("mount:/m", "sha256:x"),))):
        assert cache_key(run_step(**change)) != cache_key(a), change


def test_files_map_is_not_hashed_but_sources_are():
    a = copy_step({"a.txt": "sha256:1"})
    same_sources_other_files = KeyInputs(**{**a.__dict__, "files": {"zzz": "x"}})
    assert cache_key(a) == cache_key(same_sources_other_files)
    assert cache_key(copy_step({"a.txt": "sha256:2"})) != cache_key(a)


def test_round_trips_through_json():
    a = copy_step({"a.txt": "sha256:1"}, args=(("X", "1"),))
    b = KeyInputs.from_json(a.to_json())
    assert cache_key(b) == cache_key(a) and b.files == a.files


def test_explain_new_parent_instruction_arg_env():
    cur = run_step()
    assert explain_miss(cur, None).kind == "new"
    r = explain_miss(cur, run_step(parent="sha256:old"), parent_step="Dockerfile:3 COPY . /app",
                     parent_missed=True)
    assert r.kind == "parent" and "Dockerfile:3 COPY . /app" in r.message
    r = explain_miss(cur, run_step(instruction="RUN make -j1"))
    assert r.kind == "instruction" and "'RUN make -j1' → 'RUN make'" in r.message
    r = explain_miss(cur, run_step(args=(("V", "0"),)))
    assert r.kind == "build_arg" and r.message == "build-arg V changed: '0' → '1'"
    r = explain_miss(cur, run_step(args=()))
    assert r.message == "build-arg V changed: (unset) → '1'"
    assert explain_miss(cur, run_step(env=())).kind == "env"


def test_explain_files_names_the_changed_paths():
    old = copy_step({"a.txt": "1", "b.txt": "1", "c.txt": "1", "gone": "1"})
    new = copy_step({"a.txt": "2", "b.txt": "1", "c.txt": "1", "new1": "1", "new2": "1"})
    r = explain_miss(new, old)
    assert r.kind == "files"
    assert r.details == {"added": ["new1", "new2"], "removed": ["gone"], "changed": ["a.txt"]}
    assert r.message == "4 files changed: a.txt, new1, new2 and 1 more"


def test_explain_base_image():
    r = explain_miss(KeyInputs(op="from", instruction="FROM busybox", sources="sha256:new"),
                     KeyInputs(op="from", instruction="FROM busybox", sources="sha256:old"))
    assert r.kind == "base_image" and "sha256:old → sha256:new" in r.message
