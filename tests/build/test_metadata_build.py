"""Builds that need no base image: FROM scratch with metadata and WORKDIR steps."""
from __future__ import annotations

import pytest

from builder.frontend import DockerfileError

DOCKERFILE = """\
ARG VERSION=1
FROM scratch AS base
ARG VERSION
ENV APP=/app VERSION=${VERSION}
WORKDIR $APP/data
LABEL org.example.version=$VERSION
EXPOSE 8080 53/udp
VOLUME /data
USER 1000:1000
STOPSIGNAL SIGINT
HEALTHCHECK --interval=10s CMD ["/bin/check"]
ENTRYPOINT ["/bin/app"]
CMD ["--serve"]
"""


def test_config_fields(builder):
    image_id, report = builder.build(DOCKERFILE)
    cfg = builder.config(image_id)
    c = cfg["config"]
    assert c["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP=/app", "VERSION=1"]
    assert c["WorkingDir"] == "/app/data" and c["User"] == "1000:1000"
    assert c["Labels"] == {"org.example.version": "1"}
    assert c["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}} and c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGINT" and c["Entrypoint"] == ["/bin/app"] and c["Cmd"] == ["--serve"]
    assert c["Healthcheck"]["Test"] == ["CMD", "/bin/check"] and c["Healthcheck"]["Interval"] == 10_000_000_000
    # WORKDIR created the directory: one layer; every other step is history only.
    assert len(cfg["rootfs"]["diff_ids"]) == 1
    assert sum(not h.get("empty_layer") for h in cfg["history"]) == 1
    assert report.status == "DONE" and all(s.status == "DONE" for s in report.steps[1:])


def test_second_build_is_fully_cached_and_identical(builder):
    first, _ = builder.build(DOCKERFILE)
    second, report = builder.build()
    assert [s.status for s in report.steps] == ["CACHED"] * len(report.steps)
    assert report.misses() == []
    # Same content, but a new created time: compare everything else.
    a, b = builder.config(first), builder.config(second)
    a.pop("created"), b.pop("created")
    for h in a["history"] + b["history"]:
        h.pop("created", None)
    assert a == b


def test_build_arg_change_is_named(builder):
    builder.build(DOCKERFILE)
    _, report = builder.build(build_args={"VERSION": "2"})
    by_line = {s.line: s for s in report.steps}
    # The step that brought the build arg into the stage says which one changed ...
    arg = by_line[3]
    assert arg.status == "DONE" and arg.miss_reason.kind == "build_arg"
    assert arg.miss_reason.message == "build-arg VERSION changed: '1' → '2'"
    # ... and the steps after it say their parent missed, naming it.
    env = by_line[4]
    assert env.miss_reason.kind == "parent" and "Dockerfile:3 ARG VERSION" in env.miss_reason.message


def test_no_cache_and_filter(builder):
    builder.build(DOCKERFILE)
    _, report = builder.build(no_cache=True)
    assert all(s.status == "DONE" for s in report.steps[1:])
    assert report.steps[1].miss_reason.kind == "no_cache"
    _, report = builder.build(no_cache_filter={"base"})
    assert report.steps[2].miss_reason.message == "--no-cache-filter names stage base"


def test_source_date_epoch_gives_identical_digests(builder, tmp_path, monkeypatch):
    from tests.build.conftest import Builder

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, _ = builder.build(DOCKERFILE)
    other = Builder(root=tmp_path / "root2", context=builder.context)
    second, _ = other.build()
    assert first == second
    assert builder.config(first)["created"] == "2023-11-14T22:13:20Z"


def test_target_and_unused_build_arg_warning(builder):
    _, report = builder.build("FROM scratch AS a\nENV A=1\nFROM scratch AS b\nENV B=1\n",
                              target="a", build_args={"NOPE": "1"})
    assert {s.stage for s in report.steps} == {"a"}
    assert report.warnings == ["build-arg NOPE was not consumed by any stage"]


def test_bad_dockerfile_is_a_dockerfile_error(builder):
    with pytest.raises(DockerfileError, match="unknown instruction: RUNN"):
        builder.build("FROM scratch\nRUNN x\n")


def test_oci_output_is_read_by_skopeo(builder, tmp_path):
    import json
    import shutil
    import subprocess

    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (.ci/install installs it)")
    dest = tmp_path / "out.tar"
    image_id, _ = builder.build(DOCKERFILE, tags=["demo:1"], outputs=[f"type=oci,dest={dest}"])
    out = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{dest}"], check=True,
                         capture_output=True, text=True).stdout
    cfg = json.loads(out)
    assert cfg["config"]["Entrypoint"] == ["/bin/app"] and cfg["config"]["WorkingDir"] == "/app/data"
