"""The typed layer: what each instruction means, and what it rejects."""
from __future__ import annotations

import pytest

from builder.frontend import DockerfileError, parse
from builder.frontend.instructions import (
    AddInstruction,
    ArgInstruction,
    CmdInstruction,
    CopyInstruction,
    EntrypointInstruction,
    EnvInstruction,
    ExposeInstruction,
    HealthcheckInstruction,
    LabelInstruction,
    MaintainerInstruction,
    OnbuildInstruction,
    RunInstruction,
    ShellInstruction,
    StopSignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
)


def only(text: str):
    """The single instruction of a one-stage Dockerfile after its FROM."""
    df = parse("FROM scratch\n" + text)
    (instr,) = df.stages[0].instructions
    return instr


def error(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as err:
        parse(text)
    return err.value


def test_stages_names_and_indexes():
    df = parse("ARG V=1\nFROM busybox:$V AS Base\nRUN true\nFROM base\nFROM --platform=linux/arm64 x AS out\n")
    assert [(s.index, s.name) for s in df.stages] == [(0, "base"), (1, None), (2, "out")]
    assert df.stages[0].from_.image == "busybox:$V"
    assert df.stages[2].from_.platform == "linux/arm64"
    assert [a.name for a in df.meta_args[0].args] == ["V"]
    assert df.stage("BASE") is df.stages[0] and df.stage(1) is df.stages[1]
    with pytest.raises(DockerfileError, match="stage 'nope' not found"):
        df.stage("nope")


def test_run_shell_and_exec_forms():
    run = only("RUN echo  hi \\\n  there\n")
    assert isinstance(run, RunInstruction)
    assert run.command.shell_form and run.command.args == ["echo  hi   there"]
    run = only('RUN ["/bin/sh", "-c", "echo hi"]\n')
    assert not run.command.shell_form and run.command.args == ["/bin/sh", "-c", "echo hi"]
    # Invalid JSON falls back to the shell form, as in BuildKit.
    run = only("RUN ['single', 'quotes']\n")
    assert run.command.shell_form and run.command.args == ["['single', 'quotes']"]


def test_run_mounts_network_security():
    run = only("RUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok "
               "--mount=type=ssh --mount=type=tmpfs,target=/t,size=64m --network=none --security=insecure make\n")
    cache, secret, ssh, tmpfs = run.mounts
    assert (cache.type, cache.target, cache.id, cache.sharing, cache.readonly) == (
        "cache", "/root/.cache", "/root/.cache", "locked", False)
    assert (secret.type, secret.id, secret.target) == ("secret", "tok", "/run/secrets/tok")
    assert (ssh.id, ssh.target) == ("default", "/run/buildkit/ssh_agent.0")
    assert tmpfs.size == 64 * 1024 * 1024
    assert (run.network, run.security) == ("none", "insecure")
    bind = only("RUN --mount=from=build,source=/out,target=/in cp -r /in /x\n").mounts[0]
    assert (bind.type, bind.from_, bind.source, bind.readonly) == ("bind", "build", "/out", True)


@pytest.mark.parametrize("flag, message", [
    ("--mount=type=nfs,target=/x", "invalid --mount type 'nfs'"),
    ("--mount=type=cache", "a cache mount needs a target"),
    ("--mount=type=cache,target=/x,sharing=maybe", "unsupported sharing value 'maybe'"),
    ("--mount=type=tmpfs,target=/x,from=a", "unexpected key 'from' for a tmpfs mount"),
    ("--mount=type=secret,id=a,mode=99z", "invalid value '99z' for mount option mode"),
    ("--network=bridge", "invalid --network value 'bridge'"),
    ("--security=weird", "invalid --security value"),
    ("--nope", "unknown flag: --nope"),
    ("--network=none --network=host", "duplicate flag specified: --network"),
    ("--network", "missing a value on flag: --network"),
])
def test_run_flag_errors(flag, message):
    err = error(f"FROM scratch\nRUN {flag} true\n")
    assert message in err.message
    assert err.line == 2 and err.col >= 5


def test_copy_and_add():
    cp = only("COPY --from=build --chown=app:app --chmod=0644 --link --parents --exclude=*.md a b /dst/\n")
    assert isinstance(cp, CopyInstruction)
    assert (cp.sources, cp.dest, cp.from_, cp.chown, cp.chmod, cp.link, cp.parents, cp.excludes) == (
        ["a", "b"], "/dst/", "build", "app:app", "0644", True, True, ["*.md"])
    cp = only('COPY ["a b", "/x y/"]\n')
    assert (cp.sources, cp.dest) == (["a b"], "/x y/")
    add = only("ADD --checksum=sha256:" + "a" * 64 + " --keep-git-dir=true https://x/y.tgz /y\n")
    assert isinstance(add, AddInstruction)
    assert add.checksum == "sha256:" + "a" * 64 and add.keep_git_dir
    assert "only 1 was provided" in error("FROM x\nCOPY onlyone\n").message
    assert "invalid --chmod value" in error("FROM x\nCOPY --chmod=999 a b\n").message
    assert "invalid --checksum value" in error("FROM x\nADD --checksum=md5:abc a b\n").message
    assert "expecting boolean value for flag --link" in error("FROM x\nCOPY --link=maybe a b\n").message
    assert "unknown flag: --from for ADD" in error("FROM x\nADD --from=a a b\n").message


def test_copy_heredoc_sources():
    cp = only("COPY <<one.txt <<-'two' /dest/\nhello $X\none.txt\n\tindented\n\ttwo\n")
    assert cp.sources == [] and cp.dest == "/dest/"
    assert [(c.name, c.data, c.expand) for c in cp.contents] == [
        ("one.txt", "hello $X\n", True), ("two", "indented\n", False)]


def test_run_heredoc():
    run = only("RUN <<EOF\nset -e\necho $HOME\nEOF\n")
    assert run.command.args == ["<<EOF"]
    (doc,) = run.heredocs
    assert (doc.name, doc.content, doc.expand) == ("EOF", "set -e\necho $HOME\n", True)
    run = only("RUN python3 <<'PY' > out.txt\nprint('hi')\nPY\n")
    assert run.heredocs[0].expand is False and run.command.args == ["python3 <<'PY' > out.txt"]


def test_unterminated_heredoc():
    err = error("FROM x\n\n\nRUN <<EOF\necho\n")
    assert err.message == "unterminated heredoc <<EOF started on line 4"
    assert err.line == 4


def test_env_label_arg():
    env = only('ENV A=1 B="two words" C\\ D=3\n')
    assert isinstance(env, EnvInstruction)
    # Words are kept as written; quotes go away at expansion time.
    assert [(p.key, p.value) for p in env.pairs] == [("A", "1"), ("B", '"two words"'), ("C\\ D", "3")]
    legacy = only("ENV PATH /usr/bin:/bin  extra\n")
    assert [(p.key, p.value, p.legacy) for p in legacy.pairs] == [("PATH", "/usr/bin:/bin  extra", True)]
    label = only('LABEL a=b "c d"=e\n')
    assert isinstance(label, LabelInstruction) and [p.key for p in label.pairs] == ["a", '"c d"']
    arg = only("ARG A B=2 C=\n")
    assert isinstance(arg, ArgInstruction)
    assert [(a.name, a.default) for a in arg.args] == [("A", None), ("B", "2"), ("C", "")]
    assert "ENV must have two arguments" in error("FROM x\nENV PATH\n").message
    assert "can't find = in" in error("FROM x\nENV a=b c\n").message


def test_cmd_entrypoint_shell():
    assert only('CMD ["a", "b"]\n').command.args == ["a", "b"]
    cmd = only("CMD []\n")
    assert isinstance(cmd, CmdInstruction) and cmd.command.args == [] and not cmd.command.shell_form
    ep = only("ENTRYPOINT exec app --flag\n")
    assert isinstance(ep, EntrypointInstruction) and ep.command.args == ["exec app --flag"]
    sh = only('SHELL ["/bin/bash", "-eo", "pipefail", "-c"]\n')
    assert isinstance(sh, ShellInstruction) and sh.shell[0] == "/bin/bash"
    assert "SHELL requires the arguments to be in JSON form" in error("FROM x\nSHELL /bin/sh -c\n").message


def test_healthcheck():
    hc = only("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --start-interval=1s "
              "--retries=3 CMD curl -f http://localhost/\n")
    assert isinstance(hc, HealthcheckInstruction)
    assert hc.test == ["CMD-SHELL", "curl -f http://localhost/"]
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (90.0, 0.5, 2.0, 1.0, 3)
    assert only('HEALTHCHECK CMD ["/bin/check", "-q"]\n').test == ["CMD", "/bin/check", "-q"]
    assert only("HEALTHCHECK NONE\n").test == ["NONE"]
    assert "HEALTHCHECK NONE takes no arguments" in error("FROM x\nHEALTHCHECK NONE x\n").message
    assert "unknown type 'PING'" in error("FROM x\nHEALTHCHECK PING x\n").message
    assert "invalid duration '10'" in error("FROM x\nHEALTHCHECK --interval=10 CMD x\n").message
    assert "--retries cannot be negative" in error("FROM x\nHEALTHCHECK --retries=-1 CMD x\n").message
    assert "missing command after HEALTHCHECK CMD" in error("FROM x\nHEALTHCHECK CMD\n").message


def test_simple_instructions():
    assert only("EXPOSE 80/tcp 53/udp 8000-8010 $PORT\n").ports == ["80/tcp", "53/udp", "8000-8010", "$PORT"]
    assert isinstance(only("EXPOSE 1\n"), ExposeInstruction)
    assert only("USER app:staff\n").user == "app:staff" and isinstance(only("USER a\n"), UserInstruction)
    assert isinstance(only("WORKDIR /app\n"), WorkdirInstruction)
    assert only('VOLUME ["/a", "/b"]\n').volumes == ["/a", "/b"]
    assert only("VOLUME /a /b\n").volumes == ["/a", "/b"] and isinstance(only("VOLUME /v\n"), VolumeInstruction)
    assert isinstance(only("STOPSIGNAL SIGKILL\n"), StopSignalInstruction)
    assert only("MAINTAINER Jane Doe <jane@example.com>\n").maintainer == "Jane Doe <jane@example.com>"
    assert isinstance(only("MAINTAINER x\n"), MaintainerInstruction)
    assert "USER requires exactly one argument" in error("FROM x\nUSER\n").message
    assert "EXPOSE requires at least one argument" in error("FROM x\nEXPOSE\n").message


def test_onbuild():
    ob = only("ONBUILD COPY --chown=1 . /app\n")
    assert isinstance(ob, OnbuildInstruction)
    assert ob.expression == "COPY --chown=1 . /app"
    assert isinstance(ob.trigger, CopyInstruction) and ob.trigger.chown == "1"
    assert "chaining ONBUILD" in error("FROM x\nONBUILD ONBUILD RUN x\n").message
    assert "FROM isn't allowed as an ONBUILD trigger" in error("FROM x\nONBUILD FROM y\n").message
    assert "ONBUILD requires at least one argument" in error("FROM x\nONBUILD\n").message


def test_keywords_are_case_insensitive():
    df = parse("from busybox as Build\nrun echo\nCopy a b\n")
    assert df.stages[0].name == "build"
    assert [i.keyword for i in df.stages[0].instructions] == ["RUN", "COPY"]


def test_from_errors():
    assert "FROM requires either one or three arguments" in error("FROM a b\n").message
    assert "invalid name for build stage" in error("FROM a AS 1x\n").message
    assert "duplicate stage name 'a'" in error("FROM x AS a\nFROM y AS a\n").message
    assert "no build stage in current context" in error("RUN x\nFROM y\n").message


def test_unknown_instruction_suggests():
    err = error("FROM x\nRUNN make\n")
    assert err.message == "unknown instruction: RUNN (did you mean RUN?)"
    assert (err.line, err.col) == (2, 1)
    rendered = err.render()
    assert rendered.splitlines()[0] == "error: Dockerfile:2:1: unknown instruction: RUNN (did you mean RUN?)"
    assert "RUNN make" in rendered and "^" in rendered


def test_escape_directive_backtick():
    df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi\nCOPY a\\b c:\\d\n")
    run, cp = df.stages[0].instructions
    assert run.command.args == ["dir c:\\   && echo hi"]
    assert cp.sources == ["a\\b"] and cp.dest == "c:\\d"
    assert df.escape == "`"


def test_to_json_is_stable_schema():
    df = parse("# syntax=docker/dockerfile:1\nARG X=1\nFROM a AS b\nRUN --mount=type=cache,target=/c make\n")
    out = df.to_json()
    assert out["schema"] == "pybuild.frontend/v1"
    assert out["directives"] == {"syntax": "docker/dockerfile:1"}
    run = out["stages"][0]["instructions"][0]
    assert run["instruction"] == "RUN" and run["line"] == 4
    assert run["mounts"][0] == {"type": "cache", "target": "/c", "id": "/c", "readonly": False,
                                "sharing": "shared"}
