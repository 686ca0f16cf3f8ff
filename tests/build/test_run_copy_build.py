"""Real builds on the busybox fixture image: COPY, RUN, stages, cache, mounts, secrets."""
from __future__ import annotations

import os
import subprocess
import time

import pytest
from pathlib import Path

from builder.solver.solver import BuildError
from tests.build.conftest import image_tree

MULTI = """\
FROM busybox AS build
WORKDIR /work
COPY app.txt conf/ ./
RUN cat app.txt > out.txt && echo built >> out.txt
RUN <<EOF
set -e
mkdir -p /work/gen
echo "from heredoc $HOME" > /work/gen/h.txt
EOF

FROM busybox
COPY --from=build /work/out.txt /work/gen/ /result/
COPY --chown=nobody:nogroup --chmod=0600 app.txt /owned.txt
COPY <<EOT /inline.txt
inline $HOSTNAME_NOT_SET
EOT
CMD ["cat", "/result/out.txt"]
"""


def write_context(b):
    b.write("app.txt", "hello app\n")
    b.write("conf/settings.ini", "[x]\n")
    b.write("Dockerfile", MULTI)


def test_multistage_build_tree(bbuilder, tmp_path):
    write_context(bbuilder)
    image_id, report = bbuilder.build(tags=["multi:1"])
    root = image_tree(bbuilder, image_id, tmp_path / "rootfs")
    assert (root / "result" / "out.txt").read_text() == "hello app\nbuilt\n"
    assert (root / "result" / "h.txt").read_text() == "from heredoc /root\n"
    st = os.lstat(root / "owned.txt")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)
    assert (root / "inline.txt").read_text() == "inline \n"  # COPY heredocs expand like the shell
    assert not (root / "work").exists()  # the build stage's files are not in the final image
    assert report.status == "DONE"


def test_rebuild_cached_and_one_file_change(bbuilder):
    write_context(bbuilder)
    bbuilder.build()
    _, report = bbuilder.build()
    assert all(s.status == "CACHED" for s in report.steps)
    bbuilder.write("conf/settings.ini", "[y]\n")
    _, report = bbuilder.build()
    by_line = {(s.stage, s.line): s for s in report.steps}
    copy = by_line[("build", 3)]
    assert copy.status == "DONE" and copy.miss_reason.kind == "files"
    assert copy.miss_reason.details["changed"] == ["conf/settings.ini"]
    assert by_line[("build", 2)].status == "CACHED"  # WORKDIR, before the COPY
    assert by_line[("build", 4)].miss_reason.kind == "parent"
    # The final stage's COPY --chown of app.txt does not read the changed file ...
    own = by_line[("1", 13)]
    # ... but it follows the COPY --from of the rebuilt stage, so its parent changed.
    assert own.miss_reason.kind == "parent"


def test_dockerignored_change_invalidates_nothing(bbuilder):
    write_context(bbuilder)
    bbuilder.write(".dockerignore", "*.log\nconf/*.tmp\n")
    bbuilder.write("debug.log", "1")
    bbuilder.build()
    bbuilder.write("debug.log", "2")
    bbuilder.write("conf/x.tmp", "new")
    _, report = bbuilder.build()
    assert [s.status for s in report.steps] == ["CACHED"] * len(report.steps)


def test_failing_run_reports_and_keeps_finished_steps(bbuilder):
    bbuilder.write("Dockerfile", "FROM busybox\nRUN echo one > /one\nRUN echo oops && exit 3\n")
    with pytest.raises(BuildError) as err:
        bbuilder.build()
    assert str(err.value).startswith(str(bbuilder.context / "Dockerfile") + ":3 RUN echo oops")
    assert "exit code: 3" in str(err.value) and err.value.output_tail == ["oops"]
    bbuilder.write("Dockerfile", "FROM busybox\nRUN echo one > /one\nRUN echo fixed\n")
    _, report = bbuilder.build()
    assert [s.status for s in report.steps] == ["CACHED", "CACHED", "DONE"]


def test_cache_mount_persists_and_is_not_in_the_image(bbuilder, tmp_path):
    df = ("FROM busybox\nARG N\n"
          "RUN --mount=type=cache,target=/cache sh -c 'echo $N >> /cache/log; cat /cache/log > /seen'\n")
    bbuilder.write("Dockerfile", df)
    bbuilder.build(build_args={"N": "1"})
    image_id, _ = bbuilder.build(build_args={"N": "2"})
    root = image_tree(bbuilder, image_id, tmp_path / "rootfs")
    assert (root / "seen").read_text() == "1\n2\n"
    assert not (root / "cache" / "log").exists()


def test_cache_mount_works_with_a_relative_store_root(bbuilder, tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.chdir(bbuilder.root.parent)
    relative = replace(bbuilder, root=Path(bbuilder.root.name))  # --root root, not /abs/root
    image_id, _ = relative.build("FROM busybox\nRUN --mount=type=cache,target=/c sh -c 'echo x >> /c/log; cp /c/log /seen'\n")
    assert (image_tree(relative, image_id, tmp_path / "rootfs") / "seen").read_text() == "x\n"


def test_secret_never_lands_anywhere(bbuilder, tmp_path):
    secret = "s3cr3t-value-5f2a9c"
    src = tmp_path / "token"
    src.write_text(secret)
    bbuilder.write("Dockerfile", "FROM busybox\n"
                   "RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len\n")
    image_id, _ = bbuilder.build(secrets=[f"id=tok,src={src}"])
    root = image_tree(bbuilder, image_id, tmp_path / "rootfs")
    assert (root / "len").read_text().strip() == str(len(secret))
    # grep every file the build wrote: store, snapshots, index, report
    hits = subprocess.run(["grep", "-rl", "-a", secret, str(bbuilder.root), str(tmp_path / "report.json")],
                          capture_output=True, text=True)
    assert hits.stdout == "", hits.stdout


def test_independent_stages_run_in_parallel(bbuilder):
    bbuilder.write("Dockerfile", "FROM busybox AS a\nRUN sleep 2 && echo a > /a\n"
                                 "FROM busybox AS b\nRUN sleep 2 && echo b > /b\n"
                                 "FROM busybox AS c\nRUN sleep 2 && echo c > /c\n"
                                 "FROM busybox\nCOPY --from=a /a /\nCOPY --from=b /b /\nCOPY --from=c /c /\n")
    t0 = time.monotonic()
    bbuilder.build(jobs=4)
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"three 2 s stages took {elapsed:.1f}s"


def test_run_sees_build_args_and_env(bbuilder, tmp_path):
    bbuilder.write("Dockerfile", "FROM busybox\nARG A=fromarg\nENV B=fromenv\n"
                                 "RUN echo \"$A $B\" > /ab\n")
    image_id, _ = bbuilder.build()
    root = image_tree(bbuilder, image_id, tmp_path / "rootfs")
    assert (root / "ab").read_text() == "fromarg fromenv\n"
    env = bbuilder.config(image_id)["config"]["Env"]
    assert "B=fromenv" in env and not any(e.startswith("A=") for e in env)  # ARGs are not persisted


def test_onbuild_triggers_run_in_the_child_build(bbuilder, tmp_path):
    bbuilder.write("Dockerfile", "FROM busybox\nONBUILD COPY trigger.txt /from-trigger.txt\n"
                                 "ONBUILD RUN echo ran > /trigger-ran\n")
    bbuilder.build(tags=["onbuild-base:1"])
    bbuilder.write("trigger.txt", "copied by the trigger\n")
    bbuilder.write("Dockerfile", "FROM onbuild-base:1\nRUN cat /trigger-ran\n")
    image_id, report = bbuilder.build()
    root = image_tree(bbuilder, image_id, tmp_path / "rootfs")
    assert (root / "from-trigger.txt").read_text() == "copied by the trigger\n"
    assert (root / "trigger-ran").read_text() == "ran\n"
    assert [s.instruction for s in report.steps][:3] == [
        "FROM onbuild-base:1", "COPY trigger.txt /from-trigger.txt", "RUN echo ran > /trigger-ran"]
    # Triggers are consumed: the child image has none.
    assert "OnBuild" not in bbuilder.config(image_id)["config"]


def test_context_tar_on_stdin_hits_the_same_cache(bbuilder):
    import io
    import subprocess
    import sys

    write_context(bbuilder)
    bbuilder.build()
    tar = subprocess.run(["tar", "-C", str(bbuilder.context), "-c", "."], check=True, capture_output=True).stdout
    proc = subprocess.run([sys.executable, "-m", "builder", "build", "--root", str(bbuilder.root),
                           "--progress", "plain", "-"], input=tar, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    # Keys are content-based: the same files from a tar are the same cache keys.
    assert "0 built" in err and "DONE" not in err.replace("0 built", "")


def test_killed_build_keeps_finished_steps(bbuilder):
    import signal
    import subprocess
    import sys

    bbuilder.write("Dockerfile", "FROM busybox\nRUN echo one > /one\nRUN sleep 15\n")
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--root", str(bbuilder.root),
                             "--progress", "plain", str(bbuilder.context)],
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "RUN sleep 15" in line:  # the first RUN is done and recorded
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    bbuilder.write("Dockerfile", "FROM busybox\nRUN echo one > /one\nRUN true\n")
    _, report = bbuilder.build()
    assert [s.status for s in report.steps] == ["CACHED", "CACHED", "DONE"]
    # Opening the store again cleaned up the killed build's scratch, overlay mounts included.
    with open("/proc/self/mountinfo") as fh:
        assert str(bbuilder.root / "tmp") not in fh.read()


def test_local_and_tar_outputs_and_report_command(bbuilder, tmp_path, capsys):
    import tarfile

    from builder.cli import main

    write_context(bbuilder)
    local, tar = tmp_path / "out-dir", tmp_path / "rootfs.tar"
    bbuilder.build(outputs=[f"type=local,dest={local}", f"type=tar,dest={tar}"])
    assert (local / "result" / "out.txt").read_text() == "hello app\nbuilt\n"
    with tarfile.open(tar) as tf:
        member = tf.extractfile("result/out.txt")
        assert member.read() == b"hello app\nbuilt\n"
    # `pybuild report` shows the last build of this store as a table, and as JSON.
    assert main(["--root", str(bbuilder.root), "report"]) == 0
    out = capsys.readouterr().out
    assert "COPY app.txt conf/ ./" in out and "DONE" in out
    assert main(["--root", str(bbuilder.root), "report", "--format", "json"]) == 0
    assert '"schema": "pybuild.report/v1"' in capsys.readouterr().out


def test_copy_link_layer_is_reused_on_a_changed_base(bbuilder, tmp_path):
    bbuilder.write("app.txt", "linked\n")
    bbuilder.write("Dockerfile", "FROM busybox\nARG V=1\nRUN echo $V > /base\nCOPY --link app.txt /opt/app.txt\n"
                                 "RUN cat /base /opt/app.txt > /both\n")
    first, _ = bbuilder.build()
    second, report = bbuilder.build(build_args={"V": "2"})
    steps = {s.line: s for s in report.steps}
    assert steps[3].status == "DONE"       # the base changed ...
    assert steps[4].status == "CACHED"     # ... but the --link layer is reused on it
    assert steps[5].status == "DONE"       # and what comes after still sees the new base
    root = image_tree(bbuilder, second, tmp_path / "rootfs")
    assert (root / "both").read_text() == "2\nlinked\n"
    # The COPY --link layer is the same blob in both images.
    a, b = bbuilder.config(first)["rootfs"]["diff_ids"], bbuilder.config(second)["rootfs"]["diff_ids"]
    assert a[-2] == b[-2] and a[-3] != b[-3]


def test_failing_step_error_names_the_step_and_shows_output(bbuilder):
    import sys

    bbuilder.write("Dockerfile", "FROM busybox\n\nRUN echo compiling && echo 'error: boom' >&2 && exit 7\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "build", "--root", str(bbuilder.root),
                           "--progress", "plain", str(bbuilder.context)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    err = proc.stderr
    assert "Dockerfile:3 RUN echo compiling" in err and "exit code: 7" in err
    assert "  | error: boom" in err and "Traceback" not in err


def test_copy_snapshotter_gives_identical_layers(bbuilder, tmp_path, monkeypatch):
    from tests.build.conftest import Builder

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    write_context(bbuilder)
    overlay_id, _ = bbuilder.build()
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "copy")
    other = Builder(root=tmp_path / "copy-root", context=bbuilder.context)
    from builder.exporter import load_archive
    store = other.store()
    try:
        from tests.store.conftest import load_make_busybox  # noqa: F401
        load_archive(store, next(iter(tmp_path.parent.glob("busybox*/busybox-oci.tar")), None) or
                     _busybox_tar(tmp_path))
    finally:
        store.close()
    copy_id, _ = other.build()
    assert bbuilder.config(overlay_id)["rootfs"] == other.config(copy_id)["rootfs"]


def _busybox_tar(tmp_path):
    from tests.store.conftest import load_make_busybox

    out = tmp_path / "bb.tar"
    assert load_make_busybox().main(["-o", str(out)]) == 0
    return out


def test_platform_args_can_be_declared_in_a_stage(bbuilder, tmp_path):
    bbuilder.write("Dockerfile", "FROM busybox\nARG TARGETPLATFORM\nARG TARGETARCH\n"
                                 "RUN echo \"$TARGETPLATFORM $TARGETARCH\" > /p\n")
    image_id, _ = bbuilder.build()
    got = (image_tree(bbuilder, image_id, tmp_path / "r") / "p").read_text().split()
    assert got[0].startswith("linux/") and got[1] == got[0].split("/")[1]


def test_add_url_with_checksum(bbuilder, tmp_path):
    import hashlib
    import http.server
    import threading

    (tmp_path / "www").mkdir()
    payload = b"downloaded content\n"
    (tmp_path / "www" / "file.txt").write_bytes(payload)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/file.txt"
        good = "sha256:" + hashlib.sha256(payload).hexdigest()
        bbuilder.write("Dockerfile", f"FROM busybox\nADD --checksum={good} {url} /dl/\n")
        image_id, _ = bbuilder.build()
        assert (image_tree(bbuilder, image_id, tmp_path / "r") / "dl" / "file.txt").read_bytes() == payload
        bad = "sha256:" + "0" * 64
        bbuilder.write("Dockerfile", f"FROM busybox\nADD --checksum={bad} {url} /dl/\n")
        with pytest.raises(BuildError, match="checksum mismatch"):
            bbuilder.build()
    finally:
        server.shutdown()


def test_symbolic_chmod(bbuilder, tmp_path):
    bbuilder.write("tool.sh", "#!/bin/sh\n", mode=0o644)
    bbuilder.write("d/data.txt", "x", mode=0o600)
    bbuilder.write("Dockerfile", "FROM busybox\nCOPY --chmod=a+rx tool.sh /bin/tool\n"
                                 "COPY --chmod=u=rwX,go=rX d/ /data/\n")
    image_id, _ = bbuilder.build()
    root = image_tree(bbuilder, image_id, tmp_path / "r")
    assert os.stat(root / "bin" / "tool").st_mode & 0o7777 == 0o755
    assert os.stat(root / "data" / "data.txt").st_mode & 0o7777 == 0o644


def test_sigterm_stops_a_running_step_promptly(bbuilder):
    import signal
    import sys

    bbuilder.write("Dockerfile", "FROM busybox\nRUN echo one > /one\nRUN sleep 30 # pybuild-sigterm-test\n")
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--root", str(bbuilder.root),
                             "--progress", "plain", str(bbuilder.context)], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "RUN sleep 30" in line:
            break
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=20)[1]
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130 and "error: interrupted" in rest
    leftover = subprocess.run(["pgrep", "-f", "pybuild-sigterm-test"], capture_output=True, text=True)
    assert leftover.stdout == ""
    with open("/proc/self/mountinfo") as fh:
        assert str(bbuilder.root) not in fh.read()
