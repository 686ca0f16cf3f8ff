"""pybuild-runc's argparse-free parser gives argparse's namespace, or declines.

``_fast_parse`` handles the plain forms of run/create/start/state/delete/kill
(start-up time); the argparse parser stays the reference. Every command line
here is parsed both ways: where the fast parser answers, the answers must be
equal, and the common forms must be answered fast.
"""
from __future__ import annotations

import itertools

import pytest

from builder.runtime.cli import _fast_parse, _parser, _subcommand_of

GLOBALS = [[], ["--root", "/r"], ["--root=/r"], ["--log", "/l", "--log-format", "json"], ["--debug"],
           ["--rootless", "auto"], ["--systemd-cgroup"], ["--log-format", "xml"], ["--criu", "x"], ["--roo", "/r"]]
COMMANDS = [
    ["run", "c1"], ["run", "-b", "/b", "c1"], ["run", "--bundle=/b", "c1", "--detach"], ["run", "c1", "-d", "--keep"],
    ["run", "--pid-file", "/p", "--console-socket", "/s", "c1"], ["run", "--preserve-fds", "3", "c1"],
    ["run", "--preserve-fds", "x", "c1"], ["run", "--no-pivot", "--no-new-keyring", "c1"], ["run"],
    ["run", "a", "b"], ["run", "-b"], ["run", "-b", "-d", "c1"], ["run", "--detach=1", "c1"], ["run", "-db", "/b", "c1"],
    ["run", "--", "c1"], ["run", "-h"], ["run", "--bund", "/b", "c1"],
    ["create", "c1"], ["create", "-b", "/b", "--pid-file=/p", "c1"], ["create", "c1", "--detach"],
    ["start", "c1"], ["start"], ["state", "c1"], ["state", "c1", "c2"],
    ["delete", "c1"], ["delete", "-f", "c1"], ["delete", "--force", "c1"],
    ["kill", "c1"], ["kill", "c1", "KILL"], ["kill", "-a", "c1", "9"], ["kill", "--all", "c1", "SIGUSR1"],
    ["kill", "c1", "-9"], ["kill"], ["list"], ["spec"], ["exec", "c1", "true"],
]


def _argparse(argv: list[str]) -> dict | None:
    try:
        return vars(_parser(only=_subcommand_of(argv)).parse_args(argv))
    except SystemExit:
        return None


@pytest.mark.parametrize("argv", [g + c for g, c in itertools.product(GLOBALS, COMMANDS)],
                         ids=lambda argv: " ".join(argv))
def test_fast_parse_agrees_with_argparse(argv, capsys) -> None:
    fast = _fast_parse(argv)
    if fast is not None:
        assert vars(fast) == _argparse(argv)
    capsys.readouterr()


@pytest.mark.parametrize("argv", [
    ["--root", "/r", "run", "-b", "/b", "c1"], ["run", "--bundle", "/b", "--pid-file", "/p", "-d", "c1"],
    ["--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "c1"], ["start", "c1"], ["state", "c1"],
    ["delete", "--force", "c1"], ["kill", "c1", "KILL"], ["--root=/r", "kill", "--all", "c1"],
])
def test_common_forms_take_the_fast_path(argv) -> None:
    assert _fast_parse(argv) is not None
