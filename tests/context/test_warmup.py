"""The context warm-up: a forked helper walks and hashes a fresh context while the build
starts, and the build takes its selections only where they are exactly what it would make."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.context import BuildContext, ContextError, MetadataCache
from builder.context.warmup import copy_source_keys, start_warmup, stages_up_to
from builder.frontend import parse
from tests.context.conftest import make_tree, sha

DOCKERFILE = """\
FROM scratch AS base
COPY src /app/src
COPY --exclude=*.log . /all
ARG V=1
COPY src/$V /versioned
COPY --from=base /app /other
ADD https://example.com/x /x
COPY src /again/src
FROM base AS final
COPY --parents src/*.txt /p/
"""


def keys(text: str, target: str | None = None):
    return copy_source_keys(stages_up_to(parse(text.encode(), "Dockerfile"), target))


def test_keys_are_the_context_sources_without_variables_urls_or_stages() -> None:
    assert keys(DOCKERFILE) == [
        (("src",), (), False),
        ((".",), ("*.log",), False),
        (("src/*.txt",), (), True),
    ]
    # --target stops at that stage: the later stage's COPY is not worth hashing for.
    assert keys(DOCKERFILE, target="base") == [(("src",), (), False), ((".",), ("*.log",), False)]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    files = {f"src/d{i // 100}/f{i}.txt": f"content {i}\n" * (i % 7 + 1) for i in range(600)}
    files["src/big.bin"] = os.urandom(200_000)
    files["notes.log"] = "ignored by --exclude"
    files["Dockerfile"] = "FROM scratch\nCOPY . /ctx\nCOPY src /src\n"
    return make_tree(tmp_path / "ctx", files)


def started(context: Path, cache: Path):
    warmup = start_warmup(context, context / "Dockerfile", None, cache)
    assert warmup is not None, "the helper should start from a single-threaded test process"
    return warmup


def test_the_helpers_selection_is_the_one_the_build_would_make(context: Path, tmp_path: Path) -> None:
    warmup = started(context, tmp_path / "cache")
    try:
        with BuildContext.from_directory(context) as ctx:
            for sources in (["."], ["src"]):
                key = (tuple(sources), (), False)
                mine = ctx.select(sources)
                theirs = warmup.selection(key, ctx.root, lambda s=sources: ctx.select(s))
                assert theirs is not None
                assert theirs.digest == mine.digest
                assert theirs.files == mine.files
                assert theirs.matches == mine.matches
                assert theirs.entries == mine.entries  # unpacked on demand, by a checked walk
            # A COPY it did not prepare gets nothing from it: the build selects for itself.
            assert warmup.selection((("src/d1",), (), False), ctx.root, lambda: None) is None
    finally:
        warmup.close()


def test_it_saves_its_digests_for_later_builds(context: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    time.sleep(1.05)  # past the racy-file window: files this fresh are never recorded
    warmup = started(context, cache)
    assert warmup.wait_saved(timeout=30)
    warmup.close()
    with BuildContext.from_directory(context, cache_dir=cache) as ctx:
        ctx.select(["."])
        assert ctx.stats.files_hashed == 0  # every digest came from what the helper saved
        assert ctx.stats.cache_hits == 603  # 600 + big.bin + notes.log + Dockerfile


def test_a_walk_of_the_builds_own_takes_the_helpers_digests(context: Path, tmp_path: Path) -> None:
    warmup = started(context, tmp_path / "cache")
    try:
        with BuildContext.from_directory(context) as ctx:
            ctx.hasher.warmup = warmup
            assert len(warmup.digests(timeout=30)) == 603  # it has read everything
            (context / "src" / "d2" / "f201.txt").write_text("changed after the helper read it\n")
            made = ctx.select(["src/d2"])  # e.g. COPY src/$DIR: not one the helper prepared
            assert ctx.stats.cache_hits == 99  # taken from the helper, stat fields all matching
            assert ctx.stats.files_hashed == 1  # the changed file is read again
            assert made.files["src/d2/f201.txt"].endswith(sha(b"changed after the helper read it\n"))
    finally:
        warmup.close()


def test_a_build_cached_to_the_end_is_never_sent_the_digests(context: Path, tmp_path: Path) -> None:
    warmup = started(context, tmp_path / "cache")
    with BuildContext.from_directory(context) as ctx:
        made = warmup.selection(((".",), (), False), ctx.root, lambda: ctx.select(["."]))
        assert made is not None and made.digest == ctx.select(["."]).digest
    assert warmup.wait_saved(timeout=30)
    time.sleep(0.2)
    assert _alive(warmup.pid)  # saved, and waiting to hear whether the build wants its digests
    warmup.close()  # it does not: the helper exits without sending them
    assert not _alive(warmup.pid)
    assert warmup._digests_raw == b"" and warmup.digests() == {}


def test_a_file_changed_after_its_walk_is_not_taken_on_trust(context: Path, tmp_path: Path) -> None:
    warmup = started(context, tmp_path / "cache")
    try:
        with BuildContext.from_directory(context) as ctx:
            made = warmup.selection(((".",), (), False), ctx.root, lambda: ctx.select(["."]))
            assert made is not None
            (context / "src" / "d0" / "f1.txt").write_text("changed while the build ran\n")
            # The COPY runs: its entries come from a fresh walk, which no longer matches the
            # digest the cache key was made of.
            with pytest.raises(ContextError, match="changed while this build was reading it"):
                made.entries
    finally:
        warmup.close()


def test_no_helper_for_a_dockerfile_that_does_not_parse_or_copies_nothing(context: Path, tmp_path: Path) -> None:
    (context / "Dockerfile").write_text("FROM scratch\nRUNN make\n")
    assert start_warmup(context, context / "Dockerfile", None, tmp_path / "cache") is None
    (context / "Dockerfile").write_text("FROM scratch\nRUN make\n")
    assert start_warmup(context, context / "Dockerfile", None, tmp_path / "cache") is None


def test_it_can_be_turned_off(context: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYBUILD_CONTEXT_WARMUP", "0")
    assert start_warmup(context, context / "Dockerfile", None, tmp_path / "cache") is None


def test_closing_early_stops_the_helper_and_leaves_no_process(tmp_path: Path) -> None:
    files = {f"d{i // 500}/f{i}": os.urandom(2048) for i in range(6000)}
    files["Dockerfile"] = "FROM scratch\nCOPY . /\n"
    context = make_tree(tmp_path / "ctx", files)
    warmup = started(context, tmp_path / "cache")
    warmup.close()  # at once: the helper is still walking or hashing
    with pytest.raises(ChildProcessError):
        os.waitpid(warmup.pid, os.WNOHANG)  # reaped, not a zombie


def test_a_cli_build_with_and_without_the_helper_makes_the_same_image(tmp_path: Path, context: Path) -> None:
    def build(root: Path, **env) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "builder", "--root", str(root), "build", "-q", str(context)],
            capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    # SOURCE_DATE_EPOCH: the same inputs give the same image id, byte for byte.
    with_helper = build(tmp_path / "a", SOURCE_DATE_EPOCH="1700000000")
    without = build(tmp_path / "b", SOURCE_DATE_EPOCH="1700000000", PYBUILD_CONTEXT_WARMUP="0")
    assert with_helper.startswith("sha256:") and with_helper == without
    # The helper saved digests into the store's metadata cache, as the build itself would.
    assert MetadataCache(tmp_path / "a" / "cache" / "context").path.is_file()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; only its parent's wait is missing


def test_a_killed_build_leaves_no_helper_hashing(tmp_path: Path) -> None:
    files = {f"d{i // 500}/f{i}": os.urandom(4096) for i in range(20000)}
    files["Dockerfile"] = "FROM scratch\nCOPY . /\n"
    context = make_tree(tmp_path / "ctx", files)
    proc = subprocess.Popen([sys.executable, "-m", "builder", "--root", str(tmp_path / "root"), "build",
                             "-q", str(context)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    helpers: list[int] = []
    deadline = time.monotonic() + 30
    while not helpers and time.monotonic() < deadline and proc.poll() is None:
        helpers = _children(proc.pid)
        time.sleep(0.002)
    assert helpers, "the build should have started its helper"
    helpers += [g for h in helpers for g in _children(h)]  # and the helper's own helper, if any
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(h) for h in helpers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(h) for h in helpers)


def test_a_walk_made_before_knowing_the_dockerfile_selects_what_select_does(context: Path) -> None:
    with BuildContext.from_directory(context) as ctx:
        walked = ctx.walk(["."])
        assert ctx.select_walked(walked).entries == ctx.select(["."]).entries


def test_a_walk_can_be_stopped_midway(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t", {f"d{i // 100}/f{i}": "x" for i in range(3000)})
    calls = []

    def interrupt() -> None:
        calls.append(1)
        raise KeyboardInterrupt  # what the helper raises is its own; any exception stops the walk

    with BuildContext.from_directory(root) as ctx:
        with pytest.raises(KeyboardInterrupt):
            ctx.walk(["."], interrupt=interrupt)
        assert calls == [1]
        assert len(ctx.select(["."]).entries) == 3031  # the context is usable afterwards


def test_a_dockerfile_copying_part_of_the_context_gets_that_part(context: Path, tmp_path: Path) -> None:
    (context / "Dockerfile").write_text("FROM scratch\nCOPY src/d1 /d1\n")
    warmup = started(context, tmp_path / "cache")
    try:
        with BuildContext.from_directory(context) as ctx:
            made = warmup.selection((("src/d1",), (), False), ctx.root, lambda: ctx.select(["src/d1"]))
            assert made is not None and made.digest == ctx.select(["src/d1"]).digest
            assert warmup.selection(((".",), (), False), ctx.root, lambda: None) is None
    finally:
        warmup.close()


def test_a_helper_that_never_answers_does_not_hold_the_build(monkeypatch, tmp_path: Path) -> None:
    from builder.context import warmup as warmup_module

    monkeypatch.setattr(warmup_module, "_ANSWER_WAIT_S", 0.2)
    stuck = subprocess.Popen(["sleep", "60"])  # stands in for a helper stuck on a hung mount
    read_fd, write_fd = os.pipe()
    try:
        helper = warmup_module.ContextWarmup(stuck.pid, read_fd)
        started_at = time.monotonic()
        assert helper.selection(((".",), (), False), tmp_path, lambda: None) is None
        assert time.monotonic() - started_at < 5
        helper.close()  # stops it
        assert not _alive(stuck.pid)
    finally:
        os.close(write_fd)
        stuck.kill()

