"""Hostile Dockerfiles: the whole frontend fails only with ``DockerfileError``, in linear time.

``tests/frontend/test_fuzz.py`` feeds random bytes and mutated corpus files to the parser.
This goes further along the pipeline ``pybuild parse --build-arg`` and ``pybuild build``
run: parse, stages, global ARGs, every stage's FROM, ARG/ENV expansion of every instruction
with random build args (``--mount`` values, heredoc bodies, patterns included), JSON and
BuildKit dump output. Inputs are generated from instruction templates, so they get past the
lexer and reach expansion. Every failure must be a ``DockerfileError`` with a line (file-level
failures excepted, listed below) and a one-line message.

Then sizes: a megabyte of continuations, a megabyte-long line, 100,000 heredocs, 10,000
nested ``${a:-...}`` and 10,000 chained stages each finish (or are refused) in time that
grows linearly: the bounds are ratios between two sizes, measured in process CPU time.
"""
from __future__ import annotations

import gc
import json
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.frontend import DockerfileError, ExpansionScope, expand_from, parse, parse_dockerfile, resolve_meta_args
from builder.frontend.dump import dump
from builder.frontend.stages import PLATFORM_ARGS, unused_build_args
from tests.hardening.conftest import cli_env, pybuild_cmd
from tests.store.conftest import busybox_archive  # noqa: F401  (session fixture)

# Failures about the file as a whole, which have no line to point at.
FILE_LEVEL = ("no FROM instruction", "file with no instructions", "stage ")


def pipeline(data: bytes, build_args: dict[str, str], target: str | None = None) -> dict | None:
    """What ``pybuild parse --build-arg ... [--target T]`` and a build's frontend do with ``data``.

    Returns the JSON document, or None if the frontend refused the input (checked here).
    """
    try:
        dump(parse_dockerfile(data).ast)
        df = parse(data)
        out = df.to_json()
        predefined = {name: "linux/amd64" if "PLATFORM" in name else "x" for name in PLATFORM_ARGS}
        meta = resolve_meta_args(df, build_args, predefined)
        last = df.stage(target).index if target else len(df.stages) - 1
        used = set(meta)
        stages = []
        for stage in df.stages[: last + 1]:
            base = expand_from(df, stage, meta, predefined)
            scope = ExpansionScope(escape=df.escape, build_args=build_args, meta_values=meta)
            stages.append({"from": base.to_json(), "instructions": [scope.expand(i).to_json()
                                                                     for i in stage.instructions]})
            used |= scope.used_args
        out["expanded"] = {"stages": stages, "unused": unused_build_args(build_args, used)}
        json.dumps(out, ensure_ascii=False)
        return out
    except DockerfileError as exc:
        check_error(exc)
        return None


def check_error(exc: DockerfileError) -> None:
    """A frontend error names its place and is one line (plus the rendered source line)."""
    text = str(exc)
    assert "\n" not in text and "\r" not in text, f"multi-line error message: {text!r}"
    assert text.startswith(exc.filename), text
    if not exc.message.startswith(FILE_LEVEL):
        assert exc.line > 0, f"error without a line: {text!r}"
    rendered = exc.render()
    assert rendered.startswith("error: ")


# --- generated Dockerfiles -----------------------------------------------------------
# Mostly well-formed instructions (so most files reach expansion) whose words are hostile:
# every ${...} form, unbalanced braces and quotes, escapes, globs, heredoc markers, odd bytes.

NAMES = ["A", "B", "a_1", "PATH", "TARGETARCH", "HTTP_PROXY", "é", "X9"]
_PIECES = [
    "$A", "${A}", "${B:-", "${A:+", "${X9-", "${A+", "${A?", "${A:?oops}", "${B?}", "${A#", "${A##*",
    "${A%", "${A%%?", "${A/", "${A//", "${A/#", "${é}", "${A:-${B:-x}}", "$1", "$@", "$$", "${", "}", "}}",
    "/", "'", '"', "\\", "`", "$", "{", "*", "?", "[", "]", "<<EOF", "=", ",", "--", "#", ":", "-", "+", "%",
    "a", "b", "0", "0755", "é", "\ufeff", "\x00", "\udcff", "\\ ", "\\\n",
]
# Pieces that keep a word balanced (no quotes, no unterminated ${): they let files get further.
_TAME = ["$A", "${A}", "${B:-x}", "${A:+y}", "${A#a}", "${A%%b*}", "${A//a/b}", "$1", "$$", "a", "b", "/", "0",
         "é", "*", "-", "{", "}", ":", "%", "${A:-${B:-x}}", "\\$A", "'$A'", '"$B c"']
word = st.lists(st.sampled_from(_TAME), min_size=1, max_size=5).map("".join) | st.lists(
    st.sampled_from(_PIECES) | st.text(alphabet="ab$/{}\\ =", max_size=3), max_size=7).map("".join)
tame = st.lists(st.sampled_from(_TAME), min_size=1, max_size=4).map("".join)
_MOUNT_VALUES = ["/x", "$A", "${A:-/c}", "0755", "1000", "locked", "private", "true", "false", "64m", "${B:?no}",
                 '"a,b"', "", "s0"]
_MOUNT_KEYS = {"bind": ["target", "source", "from", "readonly", "rw"],
               "cache": ["target", "id", "sharing", "mode", "uid", "gid", "from", "source", "readonly"],
               "tmpfs": ["target", "size"], "secret": ["id", "target", "required", "mode", "uid", "env"],
               "ssh": ["id", "target", "required", "mode"]}


@st.composite
def mount_spec(draw) -> str:
    kind = draw(st.sampled_from(sorted(_MOUNT_KEYS)))
    fields = [f"type={kind}", f"target={draw(st.sampled_from(['/t', '$A', '${A:-/t}', '/t/${B}']))}"]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(_MOUNT_KEYS[kind] + ["bogus"] * (draw(st.integers(0, 9)) == 0)))
        fields.append(f"{key}={draw(st.sampled_from(_MOUNT_VALUES) | tame)}")
    if draw(st.integers(0, 9)) == 0:
        fields.append(draw(word))
    return ",".join(draw(st.permutations(fields)))


_FLAGS = {
    "RUN": ["--network=none", "--network=$A", "--security=insecure", "--network=host"],
    "COPY": ["--from=$A", "--from=s0", "--chown=$A:$B", "--chmod=$A", "--chmod=u+x", "--chmod=0755", "--link",
             "--link=false", "--parents", "--exclude=$A", "--exclude=*.md"],
    "ADD": ["--chown=1:1", "--chmod=$A", "--checksum=sha256:$A", "--keep-git-dir", "--link"],
    "HEALTHCHECK": ["--interval=$A", "--interval=1s", "--timeout=0", "--retries=3", "--start-period=1m"],
}
# keyword -> how many words it takes: (least, most)
_ARITY = {"RUN": (1, 4), "COPY": (2, 4), "ADD": (2, 3), "EXPOSE": (1, 3), "USER": (1, 1), "WORKDIR": (1, 1),
          "VOLUME": (1, 3), "STOPSIGNAL": (1, 1), "CMD": (0, 3), "ENTRYPOINT": (0, 3), "MAINTAINER": (1, 2)}


@st.composite
def instruction(draw, clean: bool = False) -> str:
    """One instruction; ``clean`` leaves out the deliberate structural mistakes (unknown
    keywords and flags), so the file gets to expansion with its hostile words."""
    keywords = [*_ARITY, "ENV", "ARG", "LABEL", "SHELL", "HEALTHCHECK", "ONBUILD"] + ["BOGUS"] * (not clean)
    keyword = draw(st.sampled_from(keywords))
    if keyword == "ONBUILD":
        return "ONBUILD " + draw(instruction(clean).filter(lambda t: not t.startswith(("ONBUILD", "MAINT"))))
    parts = [draw(st.sampled_from([keyword, keyword.lower(), keyword.title()]))]
    for _ in range(draw(st.integers(0, 2))):
        if keyword == "RUN" and draw(st.booleans()):
            parts.append(f"--mount={draw(mount_spec())}")
        elif keyword in _FLAGS:
            parts.append(draw(st.sampled_from(_FLAGS[keyword])))
        elif not clean and draw(st.integers(0, 9)) == 0:
            parts.append("--bogus=1")
    if keyword in ("ENV", "LABEL", "ARG"):
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(NAMES) | tame)
            parts.append(name if keyword == "ARG" and draw(st.booleans()) else f"{name}={draw(word)}")
    elif keyword == "SHELL" or (keyword in ("RUN", "CMD", "ENTRYPOINT") and draw(st.booleans())):
        parts.append(json.dumps(draw(st.lists(word, min_size=keyword == "SHELL", max_size=3)), ensure_ascii=False))
    elif keyword == "HEALTHCHECK":
        parts.append(draw(st.sampled_from(["NONE", "CMD true", "CMD [\"x\", \"$A\"]", "CMD"])))
    elif keyword in _ARITY:
        least, most = _ARITY[keyword]
        parts.extend(draw(word) for _ in range(draw(st.integers(least, most))))
    text = " ".join(parts)
    if keyword in ("RUN", "COPY") and draw(st.integers(0, 3)) == 0:
        # A heredoc (quoted ones are not expanded), with expansions in its body.
        name = draw(st.sampled_from(["EOF", "'EOF'", "-EOF", '"EOF"']))
        body = "\n".join(draw(st.lists(word, max_size=3)))
        text += f" <<{name}" + (" /dst" if keyword == "COPY" else "") + f"\n{body}\nEOF"
    return text


@st.composite
def dockerfile(draw) -> bytes:
    clean = draw(st.booleans())
    directives = ["# escape=`", "# escape=\\", "# syntax=docker/dockerfile:1", "# check=skip=all", ""]
    lines = draw(st.lists(st.sampled_from(directives + ["# escape=x"] * (not clean)), max_size=2, unique=clean))
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"ARG {draw(st.sampled_from(NAMES))}" + (f"={draw(word)}" if draw(st.booleans()) else ""))
    for index in range(draw(st.integers(1, 3))):
        image = draw(st.sampled_from(["scratch", "busybox", "$A", "${A:-busybox}", "s0", "${B:?}", "b:$A"]) | tame)
        flags = draw(st.sampled_from(["", "", "--platform=$TARGETPLATFORM ", "--platform=${A} "]))
        alias = draw(st.sampled_from(["", f" AS s{index}", f" as s{index}"] + [" AS s0", " AS 0bad"] * (not clean)))
        lines.append(f"FROM {flags}{image}{alias}")
        lines.extend(draw(st.lists(instruction(clean), max_size=5)))
    sep = draw(st.sampled_from(["\n", "\n", "\r\n", "\n\n", "\n# comment\n"]))
    text = sep.join(lines) + draw(st.sampled_from(["", "\n", "\\", "\\\n"]))
    return text.encode("utf-8", "surrogateescape")


build_args = st.dictionaries(st.sampled_from(NAMES), word, max_size=4)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(dockerfile(), build_args, st.sampled_from([None, None, "s0", "1", "nope"]))
def test_generated_dockerfiles_fail_only_with_located_errors(data, args, target):
    pipeline(data, args, target)


def test_generation_reaches_expansion():
    """The generator is not just making parse errors: most of its files expand completely."""
    ok = 0
    seen = 0

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(dockerfile(), build_args)
    def count(data, args):
        nonlocal ok, seen
        seen += 1
        ok += pipeline(data, args) is not None

    count()
    assert ok >= seen // 10, f"only {ok} of {seen} generated Dockerfiles expanded"


# --- the CLI on hostile files ------------------------------------------------------------

CLI_CASES = {
    "nul-and-bad-utf8": b"FROM busybox\x00\nRUN \xff\xfe echo\n",
    "unterminated-expansion": b"FROM busybox\nARG A\nENV B=${A:-${A:-x}\n",
    "mount-expands-to-garbage": b"FROM busybox\nARG A=,,,=\nRUN --mount=type=cache,target=$A,id=$A true\n",
    "required-arg": b"ARG IMG\nFROM ${IMG:?set IMG}\n",
    "heredoc-never-closed": b"FROM busybox\nRUN <<EOF\necho ${A:-x}\n",
    "deep-nesting": b"FROM busybox\nENV A=" + b"${a:-" * 5000 + b"x" + b"}" * 5000 + b"\n",
    "stage-loop": b"FROM a AS b\nFROM b AS a\n",
    "carriage-returns": b"FROM busybox\rRUN x\r\r\n",
    # Found by bench/fuzz_frontend.py (atheris): quoted hostile text broke the one-line message.
    "cr-in-escape-directive": b"# escape=\\\rin a comment\nFROM busybox\n",
    "control-chars-in-flag": b"FROM --plat\x00\x01\rROM a busybox\n",
}


@pytest.mark.parametrize("text,line", [
    # Found by the generated-Dockerfile test: these had no line.
    (b"FROM scratch\nRUN [] <<EOF\n\nEOF\nADD $A <<EOF${B:- }", 5),  # heredoc name in the lexer
    (b"FROM scratch\nCOPY <<EOF${B:- /x\nbody\nEOF\n", 2),  # heredoc name as a COPY source
    (b"FROM scratch\nARG T\nRUN --mount=type=tmpfs,target=$T true\n", 3),  # re-checked after expansion
    (b"FROM scratch\nRUN --mount=type=secret,target=${T} true\n", 2),
])
def test_errors_found_by_fuzzing_have_a_line(text, line):
    with pytest.raises(DockerfileError) as info:
        expand_all(text.decode(), {})
    check_error(info.value)
    assert info.value.line == line, str(info.value)


@pytest.mark.parametrize("text", [b"# escape=\\\rin a comment\nFROM busybox\n",
                                  b"FROM --plat\x00\x01\rROM a busybox\n"])
def test_messages_quoting_control_characters_stay_one_line(text):
    with pytest.raises(DockerfileError) as info:
        parse(text)
    check_error(info.value)
    assert "\r" not in info.value.render()  # not split on it either (splitlines would hide it)


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_parse_answers_in_one_line(tmp_path, name):
    path = tmp_path / "Dockerfile"
    path.write_bytes(CLI_CASES[name])
    # Bytes, not text: the input's invalid UTF-8 may come back in the output.
    proc = subprocess.run(pybuild_cmd("parse", "-f", path, "--build-arg", "A=$((1", "--build-arg", "IMG"),
                          capture_output=True, timeout=60, env=cli_env())
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr
    if proc.returncode == 0:
        json.loads(proc.stdout.decode("utf-8"))  # strict: the output is UTF-8 whatever the input
    else:
        assert proc.returncode == 1, stderr
        assert stderr.startswith("error: "), stderr
        assert "internal error" not in stderr, stderr
        assert "\r" not in stderr.split("\n")[0]


# --- linear time -------------------------------------------------------------------------


def cpu(text: str, args: dict[str, str] | None = None) -> tuple[float, bool]:
    """CPU seconds a build's frontend takes on ``text`` (parse, then expand every stage; other
    load on the machine does not count), and whether it was accepted."""
    gc.collect()
    start = time.process_time()
    try:
        expand_all(text, args or {})
        accepted = True
    except DockerfileError as exc:
        check_error(exc)
        accepted = False
    return time.process_time() - start, accepted


def assert_linear(make, small: int, factor: int = 10, slack: float = 2.0, floor: float = 0.02) -> tuple[float, bool]:
    """``make(n)`` at ``small`` and ``factor * small``: the time may grow ``factor * slack``
    times at most (a quadratic cost grows ``factor ** 2``). Returns the large case's figures."""
    t_small = min(cpu(make(small))[0] for _ in range(2))
    t_large, accepted = cpu(make(small * factor))
    assert t_large <= factor * slack * max(t_small, floor), (
        f"{small} -> {small * factor}: {t_small:.3f}s -> {t_large:.3f}s, not linear")
    return t_large, accepted


def test_megabyte_of_continuations():
    def make(n):
        return "FROM x\nRUN echo start \\\n" + "  piece \\\n" * n + "  end\n"

    t, accepted = assert_linear(make, 11_000)
    assert accepted and len(make(110_000)) > 1_000_000
    assert t < 10


def test_megabyte_of_empty_continuations_and_comments():
    def make(n):
        return "FROM x\nRUN echo a \\\n" + "\\\n# c\n \\\n" * n + " b\n"

    t, accepted = assert_linear(make, 12_000)
    assert accepted and len(make(120_000)) > 1_000_000


def test_megabyte_single_line_is_refused_at_once():
    # BuildKit's scanner refuses a line over 64 KiB; so do we, with the line number.
    for text in ("FROM x\nRUN " + "a" * 1_000_000 + "\n", "FROM x\nENV A=" + "${A}" * 250_000 + "\n",
                 "FROM x\nCMD [" + '"a",' * 250_000 + '"a"]\n'):
        with pytest.raises(DockerfileError) as info:
            start = time.process_time()
            parse(text)
        assert time.process_time() - start < 1.0
        assert info.value.line == 2 and "max allowed size" in info.value.message


def test_longest_allowed_line_is_linear():
    def make(n):
        return "FROM x\nARG A=1\nENV " + " ".join(f"K{i}=${{A:-x}}$A" for i in range(n)) + "\n"

    t, accepted = assert_linear(make, 400, factor=10)
    assert accepted and len(make(4000)) < 65_535 < len(make(4000)) * 2


def test_100k_heredocs():
    def make(n):
        return "FROM x\n" + "".join(f"RUN <<E{i} cat\nline ${{A}}\nE{i}\n" for i in range(n))

    t, accepted = assert_linear(make, 10_000)
    assert accepted


def test_many_heredocs_in_one_instruction():
    def make(n):
        return "FROM x\nCOPY " + " ".join(f"<<E{i}" for i in range(n)) + " /d/\n" + "".join(
            f"body {i}\nE{i}\n" for i in range(n))

    t, accepted = assert_linear(make, 600, factor=10)
    assert accepted


def test_10000_nested_expansions_are_refused_clearly():
    text = "FROM x\nARG A\nENV B=" + "${a:-" * 10_000 + "x" + "}" * 10_000 + "\n"
    start = time.process_time()
    with pytest.raises(DockerfileError) as info:
        expand_all(text, {})
    assert time.process_time() - start < 1.0
    assert info.value.line == 3 and "nested more than" in info.value.message
    check_error(info.value)


def test_nesting_below_the_limit_expands_linearly():
    def make(n):
        return "FROM x\nARG A\nENV B=" + "${a:-x" * n + "}" * n + "\n"

    t, accepted = assert_linear(make, 9, factor=10, floor=0.05)
    assert accepted


def expand_all(text: str, args: dict[str, str]) -> None:
    df = parse(text)
    meta = resolve_meta_args(df, args)
    for stage in df.stages:
        expand_from(df, stage, meta)
        scope = ExpansionScope(escape=df.escape, build_args=args, meta_values=meta)
        for instr in stage.instructions:
            scope.expand(instr)


def test_10000_chained_stages():
    def make(n):
        return "ARG BASE=scratch\nFROM $BASE AS s0\n" + "".join(
            f"FROM s{i} AS s{i + 1}\nENV V{i}=$V{i}\n" for i in range(n))

    t, accepted = assert_linear(make, 1_000)
    assert accepted


def test_many_build_args_and_long_values():
    def make(n):
        return "FROM x\n" + "".join(f"ARG A{i}\nENV E{i}=${{A{i}:-d}}${{A{i}//a*a/b}}\n" for i in range(n))

    for n in (300, 3000):
        args = {f"A{i}": "a" * 200 for i in range(n)}
        t, accepted = cpu(make(n), args)
        assert accepted
        if n == 300:
            small = t
    assert t <= 20 * max(small, 0.02)


def test_patterns_against_long_values_do_not_backtrack():
    # A pattern with several stars against a long value would take len**k steps by backtracking.
    for pattern in ("${A//a*a*a*a*b/x}", "${A%%*a*a*a*a*b}", "${A##a*a*a*a*b}", "${A/#*a*a*a*b/}"):
        text = f"FROM x\nARG A\nENV B={pattern}\n"
        t, accepted = cpu(text, {"A": "a" * 20_000})
        assert accepted and t < 5, (pattern, t)


# --- ONBUILD triggers from a base image: Dockerfile text from someone else ---------------

HOSTILE_TRIGGERS = {
    "two-instructions": "RUN true\nRUN true",
    "a-stage": "FROM busybox",
    "empty": "",
    "comment-only": "# nothing",
    "nested-onbuild": "ONBUILD RUN true",
    "unknown": "FROOM x",
    "directive": "# escape=`",
    "unterminated": "ENV A=${B",
    "heredoc-unclosed": "RUN <<EOF",
    "huge": "RUN " + "a" * 70_000,
}


@pytest.fixture(scope="module")
def trigger_root(tmp_path_factory, busybox_archive):  # noqa: F811
    """A store with busybox and one image per hostile ONBUILD trigger (``trigger-NAME``)."""
    import dataclasses

    from builder.exporter import load_archive
    from builder.store.store import ContentStore

    root = tmp_path_factory.mktemp("triggers") / "root"
    with ContentStore(root) as store:
        load_archive(store, busybox_archive)
        base = store.get_image("busybox:latest")
        for name, trigger in HOSTILE_TRIGGERS.items():
            config = dataclasses.replace(base.config, config=dataclasses.replace(base.config.config,
                                                                                  on_build=[trigger]))
            store.put_image(config, list(base.manifest.layers), name=f"trigger-{name}:latest")
    return root


@pytest.mark.parametrize("name", sorted(HOSTILE_TRIGGERS))
def test_hostile_onbuild_trigger_in_base_image(tmp_path, trigger_root, name):
    (tmp_path / "Dockerfile").write_text(f"FROM trigger-{name}\nRUN true\n")
    proc = subprocess.run(pybuild_cmd("--root", trigger_root, "build", "--progress", "plain", tmp_path),
                          capture_output=True, timeout=120, env=cli_env())
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert proc.returncode == 1, stderr
    last = [line for line in stderr.splitlines() if line.startswith("error: ")][-1]
    assert "Dockerfile:1" in last, last
    if name != "unterminated":  # that one parses; its expansion fails
        assert "invalid ONBUILD trigger" in last, last


def test_10000_chained_stages_build(tmp_path):
    """The whole build, not only the frontend: 10,000 stages each ``FROM`` the one before
    (the solver's graph, its stage chain and the report), in time linear in the stages."""
    def build(n: int) -> float:
        ctx = tmp_path / f"ctx{n}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM scratch AS s0\n" + "".join(
            f"FROM s{i} AS s{i + 1}\n" for i in range(n)) + "COPY Dockerfile /d\n")
        start = time.monotonic()
        proc = subprocess.run(pybuild_cmd("--root", tmp_path / "root", "build", "--progress", "quiet", ctx),
                              capture_output=True, timeout=300, env=cli_env())
        assert proc.returncode == 0, proc.stderr.decode()
        return time.monotonic() - start

    small, large = build(1_000), build(10_000)
    assert large < 20 * max(small, 0.5), (small, large)
