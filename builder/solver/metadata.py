"""What metadata instructions do to an image config, and the history they leave.

``apply_metadata(state, instruction)`` returns the new config state for ENV,
LABEL, EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL, CMD, ENTRYPOINT,
HEALTHCHECK, SHELL, ONBUILD and MAINTAINER (instructions already expanded),
with docker's rules: shell-form CMD/ENTRYPOINT wrapped in the SHELL, an
ENTRYPOINT clearing a CMD inherited from the base, relative WORKDIRs joined
to the current one, EXPOSE ranges and default protocol. ``created_by`` gives
the history line BuildKit writes for each. Pure functions.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re
import signal as _signal
from dataclasses import dataclass

from builder.frontend.errors import DockerfileError
from builder.frontend.instructions import (
    AddInstruction,
    CmdInstruction,
    CopyInstruction,
    EntrypointInstruction,
    EnvInstruction,
    ExposeInstruction,
    HealthcheckInstruction,
    Instruction,
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

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
METADATA_INSTRUCTIONS = (EnvInstruction, LabelInstruction, ExposeInstruction, UserInstruction,
                         VolumeInstruction, StopSignalInstruction, CmdInstruction,
                         HealthcheckInstruction, ShellInstruction, OnbuildInstruction,
                         MaintainerInstruction)


@dataclass(frozen=True)
class ConfigState:
    """The parts of an image config a Dockerfile stage changes, as it goes."""

    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    cmd_set: bool = False  # set in this stage (an inherited CMD is cleared by ENTRYPOINT)
    shell: tuple[str, ...] | None = None
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str | None = None
    healthcheck: tuple | None = None  # (test tuple, interval_ns, timeout_ns, start_period_ns, start_interval_ns, retries)
    on_build: tuple[str, ...] = ()
    author: str | None = None

    def env_dict(self) -> dict[str, str]:
        out = {}
        for item in self.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def with_env(self, key: str, value: str) -> "ConfigState":
        items = list(self.env)
        for i, item in enumerate(items):
            if item.partition("=")[0] == key:
                items[i] = f"{key}={value}"
                break
        else:
            items.append(f"{key}={value}")
        return dataclasses.replace(self, env=tuple(items))

    def run_shell(self) -> tuple[str, ...]:
        return self.shell or DEFAULT_SHELL


def _ns(seconds: float | None) -> int:
    return int(round((seconds or 0.0) * 1e9))


_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$", re.I)


def parse_ports(specs: list[str], instr: Instruction) -> list[str]:
    """EXPOSE values to config keys: ``80`` -> ``80/tcp``, ranges expanded."""
    out: list[str] = []
    for spec in specs:
        # docker accepts ip:hostPort:containerPort forms only for -p; EXPOSE takes the last part
        m = _PORT.match(spec.rsplit(":", 1)[-1])
        if m is None:
            raise DockerfileError(f"invalid port specification {spec!r}", line=instr.line, col=instr.col,
                                  hint="EXPOSE <port>[/<tcp|udp|sctp>], e.g. 8080/tcp or 8000-8010")
        start, end = int(m.group(1)), int(m.group(2) or m.group(1))
        proto = (m.group(3) or "tcp").lower()
        if not (0 < start <= 65535 and start <= end <= 65535):
            raise DockerfileError(f"invalid port range {spec!r}", line=instr.line, col=instr.col,
                                  hint="ports are 1-65535, ranges low-high")
        if end - start > 65535:
            raise DockerfileError(f"port range too large {spec!r}", line=instr.line, col=instr.col)
        out.extend(f"{p}/{proto}" for p in range(start, end + 1))
    return out


def _check_signal(value: str, instr: Instruction) -> str:
    name = value.upper().removeprefix("SIG")
    if value.isdigit() or isinstance(getattr(_signal, "SIG" + name, None), _signal.Signals):
        return value
    if re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name):
        return value
    raise DockerfileError(f"invalid signal: {value}", line=instr.line, col=instr.col,
                          hint="use a signal name such as SIGTERM or a number")


def apply_metadata(state: ConfigState, instr: Instruction) -> ConfigState:
    """The config state after a metadata instruction (others leave it unchanged)."""
    replace = dataclasses.replace
    if isinstance(instr, LabelInstruction):
        labels = dict(state.labels)
        for p in instr.pairs:
            labels[p.key] = p.value
        return replace(state, labels=tuple(labels.items()))
    if isinstance(instr, EnvInstruction):
        for p in instr.pairs:
            state = state.with_env(p.key, p.value)
        return state
    if isinstance(instr, WorkdirInstruction):
        path = instr.path
        if not path.startswith("/"):
            path = posixpath.join(state.working_dir or "/", path)
        return replace(state, working_dir=posixpath.normpath(path) if path != "/" else "/")
    if isinstance(instr, UserInstruction):
        return replace(state, user=instr.user)
    if isinstance(instr, ExposeInstruction):
        ports = list(state.exposed_ports)
        for p in parse_ports(instr.ports, instr):
            if p not in ports:
                ports.append(p)
        return replace(state, exposed_ports=tuple(sorted(ports)))
    if isinstance(instr, VolumeInstruction):
        vols = list(state.volumes)
        for v in instr.volumes:
            if v not in vols:
                vols.append(v)
        return replace(state, volumes=tuple(vols))
    if isinstance(instr, StopSignalInstruction):
        return replace(state, stop_signal=_check_signal(instr.signal, instr))
    if isinstance(instr, EntrypointInstruction):
        args = _command(state, instr)
        # An ENTRYPOINT clears a CMD the stage inherited (docker's rule).
        return replace(state, entrypoint=args, cmd=state.cmd if state.cmd_set else None)
    if isinstance(instr, CmdInstruction):
        return replace(state, cmd=_command(state, instr), cmd_set=True)
    if isinstance(instr, HealthcheckInstruction):
        hc = (tuple(instr.test), _ns(instr.interval), _ns(instr.timeout), _ns(instr.start_period),
              _ns(instr.start_interval), instr.retries or 0)
        return replace(state, healthcheck=hc)
    if isinstance(instr, ShellInstruction):
        return replace(state, shell=tuple(instr.shell))
    if isinstance(instr, OnbuildInstruction):
        return replace(state, on_build=state.on_build + (instr.expression,))
    if isinstance(instr, MaintainerInstruction):
        return replace(state, author=instr.maintainer)
    return state


def _command(state: ConfigState, instr: CmdInstruction) -> tuple[str, ...]:
    if instr.command.shell_form:
        return state.run_shell() + tuple(instr.command.args)
    return tuple(instr.command.args)


def _go_list(items) -> str:
    return "[" + " ".join(items) + "]"


def _go_quoted_list(items) -> str:
    from builder.frontend.dump import go_quote

    return "[" + " ".join(go_quote(i) for i in items) + "]"


def created_by(state_before: ConfigState, instr: Instruction, run_args: dict[str, str] | None = None) -> str:
    """The history ``created_by`` BuildKit writes for an (expanded) instruction."""
    if isinstance(instr, RunInstruction):
        cmd = list(state_before.run_shell()) + instr.command.args if instr.command.shell_form \
            else list(instr.command.args)
        prefix = ""
        if run_args:
            prefix = f"|{len(run_args)} " + " ".join(f"{k}={v}" for k, v in sorted(run_args.items())) + " "
        return f"RUN {prefix}{' '.join(cmd)} # buildkit"
    if isinstance(instr, CopyInstruction):
        word = "ADD" if isinstance(instr, AddInstruction) else "COPY"
        flags = []
        if not isinstance(instr, AddInstruction) and instr.from_:
            flags.append(f"--from={instr.from_}")
        if instr.chown:
            flags.append(f"--chown={instr.chown}")
        if instr.chmod:
            flags.append(f"--chmod={instr.chmod}")
        if instr.link:
            flags.append("--link")
        srcs = instr.sources + [c.name for c in instr.contents]
        return " ".join([word, *flags, *srcs, instr.dest]) + " # buildkit"
    if isinstance(instr, LabelInstruction):
        return "LABEL " + " ".join(f"{p.key}={p.value}" for p in instr.pairs)
    if isinstance(instr, EnvInstruction):
        return "ENV " + " ".join(f"{p.key}={p.value}" for p in instr.pairs)
    if isinstance(instr, WorkdirInstruction):
        return f"WORKDIR {instr.path}"
    if isinstance(instr, UserInstruction):
        return f"USER {instr.user}"
    if isinstance(instr, ExposeInstruction):
        ports = sorted(set(parse_ports(instr.ports, instr)))
        return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in ports) + "]"
    if isinstance(instr, VolumeInstruction):
        return "VOLUME " + _go_list(instr.volumes)
    if isinstance(instr, StopSignalInstruction):
        return f"STOPSIGNAL {instr.signal}"
    if isinstance(instr, EntrypointInstruction):
        return "ENTRYPOINT " + _go_quoted_list(_command(state_before, instr))
    if isinstance(instr, CmdInstruction):
        return "CMD " + _go_quoted_list(_command(state_before, instr))
    if isinstance(instr, HealthcheckInstruction):
        return "HEALTHCHECK " + _go_quoted_list(instr.test)
    if isinstance(instr, ShellInstruction):
        return "SHELL " + _go_list(instr.shell)
    if isinstance(instr, OnbuildInstruction):
        return "ONBUILD " + instr.expression
    if isinstance(instr, MaintainerInstruction):
        return f"MAINTAINER {instr.maintainer}"
    return instr.original
