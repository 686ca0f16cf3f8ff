"""Metadata instructions change the image config the way docker does."""
from __future__ import annotations

import pytest

from builder.frontend import DockerfileError, ExpansionScope, parse
from builder.solver.metadata import ConfigState, apply_metadata, created_by


def run(text: str, state: ConfigState | None = None) -> tuple[ConfigState, list[str]]:
    df = parse("FROM x\n" + text)
    scope = ExpansionScope(escape=df.escape)
    state = state or ConfigState()
    history = []
    for instr in df.stages[0].instructions:
        instr = scope.expand(instr)
        history.append(created_by(state, instr))
        state = apply_metadata(state, instr)
    return state, history


def test_env_label_user_workdir():
    s, h = run("ENV A=1 B=2\nENV A=3\nLABEL k=v\nUSER app\nWORKDIR /srv\nWORKDIR app/$A\n")
    assert s.env == ("A=3", "B=2")
    assert dict(s.labels) == {"k": "v"} and s.user == "app" and s.working_dir == "/srv/app/3"
    assert h[:4] == ["ENV A=1 B=2", "ENV A=3", "LABEL k=v", "USER app"]


def test_cmd_entrypoint_shell_rules():
    s, h = run('SHELL ["/bin/bash", "-c"]\nCMD echo hi\nENTRYPOINT ["/app"]\n')
    assert s.cmd == ("/bin/bash", "-c", "echo hi") and s.entrypoint == ("/app",)
    assert h[1] == 'CMD ["/bin/bash" "-c" "echo hi"]' and h[2] == 'ENTRYPOINT ["/app"]'
    # An ENTRYPOINT clears a CMD inherited from the base image ...
    inherited = ConfigState(cmd=("sh",))
    s, _ = run('ENTRYPOINT ["/app"]\n', inherited)
    assert s.cmd is None
    # ... but not one set in this stage.
    s, _ = run('CMD ["x"]\nENTRYPOINT ["/app"]\n', inherited)
    assert s.cmd == ("x",)


def test_expose_volume_stopsignal_healthcheck_onbuild():
    s, h = run("EXPOSE 80 53/udp 8000-8002/tcp\nVOLUME /data /logs\nSTOPSIGNAL SIGINT\n"
               "HEALTHCHECK --interval=5s --retries=2 CMD true\nONBUILD RUN make\nMAINTAINER me\n")
    assert s.exposed_ports == ("53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp")
    assert s.volumes == ("/data", "/logs") and s.stop_signal == "SIGINT"
    assert s.healthcheck == (("CMD-SHELL", "true"), 5_000_000_000, 0, 0, 0, 2)
    assert s.on_build == ("RUN make",) and s.author == "me"
    assert h[0] == "EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{} 8002/tcp:{}]"
    assert h[1] == "VOLUME [/data /logs]"


def test_run_and_copy_history():
    s, h = run("RUN make all\nCOPY --chown=1:1 a b /d/\n")
    assert h == ["RUN /bin/sh -c make all # buildkit", "COPY --chown=1:1 a b /d/ # buildkit"]


@pytest.mark.parametrize("text, message", [
    ("EXPOSE 99999\n", "invalid port range"),
    ("EXPOSE http\n", "invalid port specification"),
    ("STOPSIGNAL SIGNOPE\n", "invalid signal: SIGNOPE"),
])
def test_invalid_values(text, message):
    with pytest.raises(DockerfileError, match=message):
        run(text)
