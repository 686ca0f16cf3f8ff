"""ARG/ENV scoping and expansion, applied where BuildKit applies it."""
from __future__ import annotations

import pytest

from builder.frontend import DockerfileError, ExpansionScope, expand_from, parse, resolve_meta_args
from builder.frontend.stages import unused_build_args


def expand_stage(text: str, build_args=None, stage=0, base_env=None):
    df = parse(text)
    build_args = build_args or {}
    meta = resolve_meta_args(df, build_args)
    st = df.stages[stage]
    scope = ExpansionScope(escape=df.escape, env=dict(base_env or {}), build_args=build_args,
                           meta_values=meta)
    base = expand_from(df, st, meta)
    return base, [scope.expand(i) for i in st.instructions], scope


def test_global_args_expand_from_only():
    text = "ARG TAG=1.36\nARG REPO=busybox\nFROM ${REPO}:${TAG}\nRUN echo $TAG\nWORKDIR /$TAG\n"
    base, (run, workdir), _ = expand_stage(text)
    assert base.image == "busybox:1.36"
    # A global ARG is not visible inside the stage until re-declared.
    assert workdir.path == "/"
    assert run.command.args == ["echo $TAG"]  # RUN is left to the shell
    base, _, _ = expand_stage(text, {"TAG": "latest"})
    assert base.image == "busybox:latest"


def test_redeclared_global_arg_takes_global_value():
    _, (_, workdir), scope = expand_stage("ARG V=3\nFROM x\nARG V\nWORKDIR /v$V\n")
    assert workdir.path == "/v3"
    _, (_, workdir), _ = expand_stage("ARG V=3\nFROM x\nARG V\nWORKDIR /v$V\n", {"V": "9"})
    assert workdir.path == "/v9"


def test_env_overrides_arg_whatever_the_order():
    text = "FROM x\nARG A=fromarg\nENV A=fromenv\nENV B=env\nARG B=arg\nLABEL a=$A b=$B\n"
    _, instrs, scope = expand_stage(text, {"A": "cli", "B": "cli"})
    label = instrs[-1]
    assert [(p.key, p.value) for p in label.pairs] == [("a", "fromenv"), ("b", "env")]


def test_env_uses_earlier_env_and_quotes_go():
    text = 'FROM x\nENV A=1 B="${A}2" C=\'$A\'\nENV D=${MISSING:-dflt} E=${A:+set}\n'
    _, (e1, e2), scope = expand_stage(text)
    assert [(p.key, p.value) for p in e1.pairs] == [("A", "1"), ("B", "12"), ("C", "$A")]
    assert scope.env == {"A": "1", "B": "12", "C": "$A", "D": "dflt", "E": "set"}


def test_base_image_env_is_visible():
    _, (wd,), _ = expand_stage("FROM x\nWORKDIR $HOME/app\n", base_env={"HOME": "/root"})
    assert wd.path == "/root/app"


def test_copy_add_user_expose_volume_stopsignal():
    text = ("FROM x\nARG U=app D=/dst P=8080 S=SIGINT\n"
            "COPY --chown=$U:$U --from=${U}b src-$U $D/\nUSER $U\nEXPOSE $P ${P}/udp\n"
            "VOLUME /data/$U\nSTOPSIGNAL $S\n")
    _, (_, cp, user, expose, vol, stop), _ = expand_stage(text)
    assert (cp.chown, cp.from_, cp.sources, cp.dest) == ("app:app", "appb", ["src-app"], "/dst/")
    assert user.user == "app"
    assert expose.ports == ["8080", "8080/udp"]
    assert vol.volumes == ["/data/app"] and stop.signal == "SIGINT"


def test_run_mount_values_are_expanded():
    _, (_, run), _ = expand_stage("FROM x\nARG C=/cache\nRUN --mount=type=cache,target=$C,id=c-$C make\n")
    assert (run.mounts[0].target, run.mounts[0].id) == ("/cache", "c-/cache")


def test_copy_heredoc_expands_unless_quoted():
    text = "FROM x\nARG N=world\nCOPY <<a <<'b' /d/\nhello $N\na\nraw $N\nb\n"
    _, (_, cp), _ = expand_stage(text)
    assert [c.data for c in cp.contents] == ["hello world\n", "raw $N\n"]


def test_cmd_entrypoint_healthcheck_not_expanded():
    _, (_, cmd, hc), _ = expand_stage("FROM x\nARG A=1\nCMD echo $A\nHEALTHCHECK CMD test $A\n")
    assert cmd.command.args == ["echo $A"] and hc.test == ["CMD-SHELL", "test $A"]


def test_escape_directive_applies_to_expansion():
    _, (_, wd), _ = expand_stage("# escape=`\nFROM x\nARG A=1\nWORKDIR c:\\$A`$A\n")
    assert wd.path == "c:\\1$A"


def test_unused_build_args():
    df = parse("ARG G\nFROM x\nARG USED\n")
    meta = resolve_meta_args(df, {"G": "1"})
    scope = ExpansionScope(build_args={"USED": "1", "EXTRA": "2", "HTTP_PROXY": "p"}, meta_values=meta)
    for instr in df.stages[0].instructions:
        scope.expand(instr)
    assert unused_build_args({"USED": "1", "EXTRA": "2", "G": "1", "HTTP_PROXY": "p"},
                             scope.used_args | set(meta)) == ["EXTRA"]


def test_expansion_errors_have_position():
    with pytest.raises(DockerfileError) as err:
        expand_stage("FROM x\n\nWORKDIR ${NOPE:?must be set}\n")
    assert err.value.line == 3 and "must be set" in err.value.message
    with pytest.raises(DockerfileError, match="base name"):
        expand_stage("ARG IMG\nFROM $IMG\n")


def test_referenced_names_are_recorded():
    _, _, scope = expand_stage("FROM x\nARG A=1\nWORKDIR /$A/$UNSET\n")
    assert {"A", "UNSET"} <= scope.referenced
