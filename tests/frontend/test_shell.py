"""The shell-word lexer against BuildKit's own lexer tests, plus properties.

The conformance data is BuildKit's (``shell/envVarTest``, ``shell/wordsTest``
and the tables of ``shell/lex_test.go``), read from the shared corpus; see its
README for the formats. Every case is its own test so the count is visible.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import PybuildError
from builder.frontend import shell
from builder.frontend.shell import ExpansionError, Lexer, envs_from_list
from tests.conftest import CORPUS

SHELL = CORPUS / "shell"

# --- reading the corpus ---------------------------------------------------------


@dataclass(frozen=True)
class EnvVarCase:
    line: int
    platform: str  # A (all), U (non-Windows), W (Windows only)
    source: str
    expected: str  # "error" means an error is expected


@dataclass(frozen=True)
class WordsCase:
    line: int
    source: str
    env: tuple[tuple[str, str], ...]
    expected: tuple[str, ...]


def read_env_var_cases() -> list[EnvVarCase]:
    cases = []
    for number, line in enumerate((SHELL / "envVarTest").read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, f"envVarTest line {number}: {line!r}"
        platform, source, expected = (f.strip() for f in fields)
        assert platform in ("A", "U", "W"), f"envVarTest line {number}: platform {platform!r}"
        cases.append(EnvVarCase(number, platform, source, expected))
    return cases


def read_words_cases() -> list[WordsCase]:
    cases, env = [], {}
    text = (SHELL / "wordsTest").read_text(encoding="utf-8")
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[3:].lstrip(" ").partition("=")
            env[name] = value  # trailing spaces are part of the value
            continue
        if number == len(text.split("\n")) and line == "":
            continue  # the newline that ends the file
        fields = line.split("|")
        assert len(fields) == 2, f"wordsTest line {number}: {line!r}"
        cases.append(WordsCase(number, fields[0].strip(), tuple(env.items()),
                               tuple(fields[1].lstrip(" ").split(","))))
    return cases


def read_tables() -> dict:
    return json.loads((SHELL / "extracted" / "process_word.json").read_text(encoding="utf-8"))


ENV_VAR_CASES = read_env_var_cases() if SHELL.is_dir() else []
WORDS_CASES = read_words_cases() if SHELL.is_dir() else []
TABLES = read_tables() if SHELL.is_dir() else {}
# The fixed environment of TestShellParser4EnvVars.
ENV_VAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

LINUX_ROWS = [c for c in ENV_VAR_CASES if c.platform in ("A", "U")]
WINDOWS_ROWS = [c for c in ENV_VAR_CASES if c.platform == "W"]


def table(name: str) -> list[dict]:
    return TABLES.get(name, {}).get("cases", [])


def test_the_corpus_is_there(corpus):
    assert (corpus / "shell").resolve() == SHELL.resolve()
    assert len(LINUX_ROWS) == 228 and len(WINDOWS_ROWS) == 2
    assert len(WORDS_CASES) == 24


# --- shell/envVarTest ---------------------------------------------------------------


@pytest.mark.parametrize("case", LINUX_ROWS, ids=[f"line{c.line}" for c in LINUX_ROWS])
def test_env_var_test(case: EnvVarCase):
    lexer = Lexer()
    if case.expected == "error":
        with pytest.raises(ExpansionError):
            lexer.process_word(case.source, ENV_VAR_ENV)
    else:
        assert lexer.process_word(case.source, ENV_VAR_ENV) == case.expected


@pytest.mark.parametrize("case", WINDOWS_ROWS, ids=[f"line{c.line}" for c in WINDOWS_ROWS])
def test_env_var_test_windows_rows_do_not_apply(case: EnvVarCase):
    """Windows rows expect case-insensitive names; on Linux the U twin (the
    line before it) applies instead, and it is tested above."""
    twin = next(c for c in ENV_VAR_CASES if c.line == case.line - 1)
    assert twin.platform == "U" and twin.source == case.source
    assert Lexer().process_word(case.source, ENV_VAR_ENV) == twin.expected != case.expected


# --- shell/wordsTest ------------------------------------------------------------------


@pytest.mark.parametrize("case", WORDS_CASES, ids=[f"line{c.line}" for c in WORDS_CASES])
def test_words_test(case: WordsCase):
    """Default mode only: the Go test's second mode never runs (see the corpus README)."""
    try:
        words = Lexer().process_words(case.source, dict(case.env))
    except ExpansionError:
        words = ["error"]
    assert tuple(words) == case.expected


# --- shell/extracted/process_word.json ---------------------------------------------


MATCH_CASES = table("process_word_with_matches")


@pytest.mark.parametrize("case", MATCH_CASES, ids=[c["input"] for c in MATCH_CASES])
def test_process_word_with_matches(case: dict):
    lexer = Lexer()
    if case.get("expect_error"):
        with pytest.raises(ExpansionError):
            lexer.process_word_with_matches(case["input"], case["envs"])
        return
    result, matched, unmatched = lexer.process_word_with_matches(case["input"], case["envs"])
    assert result == case["expected"]
    assert sorted(matched) == case["matches"]
    assert sorted(unmatched) == case["unmatched"]


PLATFORM_CASES = table("process_word_platform")


@pytest.mark.parametrize("case", PLATFORM_CASES, ids=[str(i) for i in range(len(PLATFORM_CASES))])
def test_release_file_name(case: dict):
    assert Lexer().process_word(case["input"], case["envs"]) == case["expected"]


MANDATORY_CASES = table("mandatory_env_vars")


@pytest.mark.parametrize("case", MANDATORY_CASES,
                         ids=[f"{c['input']}-{'+'.join(c['envs'])}" for c in MANDATORY_CASES])
def test_mandatory_env_vars(case: dict):
    env = envs_from_list(case["envs"])
    if "expect_error_contains" in case:
        with pytest.raises(ExpansionError, match=case["expect_error_contains"]):
            Lexer().process_word(case["input"], env)
    else:
        assert Lexer().process_word(case["input"], env) == case["expected"]


GET_ENV_CASES = table("get_env")


@pytest.mark.parametrize("case", GET_ENV_CASES, ids=[f"{'+'.join(c['envs'])}:{c['name']}" for c in GET_ENV_CASES])
def test_get_env(case: dict):
    env = envs_from_list(case["envs"])
    assert env.get(case["name"], "") == case["expected"]
    assert Lexer().process_word("${" + case["name"] + "}", env) == case["expected"]


def test_every_extracted_table_is_exercised():
    assert set(TABLES) - {"buildkit_commit", "source"} == {
        "process_word_with_matches", "process_word_platform", "mandatory_env_vars", "get_env"}
    assert len(MATCH_CASES) == 47


# --- options and behaviour beyond the corpus -----------------------------------


def test_typical_dockerfile_words():
    env = {"HOME": "/root", "ARCH": "amd64"}
    lexer = Lexer()
    assert lexer.process_word("/usr/local/bin", env) == "/usr/local/bin"
    assert lexer.process_word("$HOME/bin", env) == "/root/bin"
    assert lexer.process_word("${VERSION:-1.0}-${ARCH}", env) == "1.0-amd64"


def test_matches_report_which_names_a_step_depends_on():
    result, used, unset = Lexer().process_word_with_matches(
        "${GOOS:-linux}/$GOARCH ${CGO_ENABLED+cgo}", {"GOARCH": "arm64", "CGO_ENABLED": ""})
    assert result == "linux/arm64 cgo"
    assert used == {"GOARCH", "CGO_ENABLED"} and unset == {"GOOS"}


def test_backtick_escape():
    lexer = Lexer(escape="`")
    assert lexer.process_word(r"C:\dir\$X", {"X": "y"}) == r"C:\dir\y"
    assert lexer.process_word("`$X", {"X": "y"}) == "$X"
    assert lexer.process_word('"a`"b"', {}) == 'a"b'
    assert lexer.process_word('"a`b"', {}) == "a`b"
    assert lexer.process_words("a` b c", {}) == ["a b", "c"]


def test_an_escape_other_than_backslash_or_backtick_is_refused():
    with pytest.raises(ValueError):
        Lexer(escape="x")


def test_raw_quotes_keep_the_quote_characters():
    lexer = Lexer(raw_quotes=True)
    assert lexer.process_word("""'a b'"c $X"d""", {"X": "x"}) == """'a b'"c x"d"""
    assert lexer.process_words("""'a b' "c d" e""", {}) == ["'a b'", '"c d"', "e"]


def test_raw_escapes_keep_the_escape_characters():
    lexer = Lexer(raw_escapes=True)
    assert lexer.process_word(r"a\ b\$X", {"X": "x"}) == r"a\ b\$X"
    assert lexer.process_word("a\\", {}) == "a\\"
    # Inside double quotes an escape before an ordinary character is written
    # twice in raw mode: once as the escape, once as a literal (BuildKit does this).
    assert lexer.process_word(r'"\t"', {}) == r"\\t"
    assert lexer.process_word(r'"\""', {}) == r"\""


def test_skip_unset_env_leaves_unset_references_as_written():
    lexer = Lexer(skip_unset_env=True)
    env = {"SET": "v"}
    assert lexer.process_word("$SET $UNSET ${UNSET} ${SET}", env) == "v $UNSET ${UNSET} v"
    assert lexer.process_word("${UNSET:-d} ${UNSET#x} ${UNSET//a/b}", env) == \
        "${UNSET:-d} ${UNSET#x} ${UNSET/a/b}"
    assert lexer.process_word("${SET:-d}", env) == "v"


def test_skip_process_quotes_treats_quotes_as_text():
    lexer = Lexer(skip_process_quotes=True)
    assert lexer.process_word("'$X' \"$X\"", {"X": "x"}) == "'x' \"x\""
    assert lexer.process_word("it's", {}) == "it's"
    assert lexer.process_words("'a b'", {}) == ["'a", "b'"]


def test_heredoc_operator_keeps_its_blanks_in_one_word():
    lexer = Lexer(raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    assert lexer.process_words("cat << EOF > out", {}) == ["cat", "<< EOF", ">", "out"]
    assert lexer.process_words("<<- EOF", {}) == ["<<-", "EOF"]
    assert lexer.process_words("3<<EOF a<b", {}) == ["3<<EOF", "a<b"]
    assert Lexer().process_word("a <<  b", {}) == "a <<  b"


def test_unquoted_expansions_split_on_unicode_whitespace_like_go():
    # Go's unicode.IsSpace: NBSP splits, the ASCII separators 0x1c-0x1f do not.
    assert Lexer().process_words("$X", {"X": "a\u00a0b\x1fc"}) == ["a", "b\x1fc"]
    assert Lexer().process_words("a\u3000b", {}) == ["a", "b"]


def test_names_use_unicode_letters_and_decimal_digits():
    env = {"é1": "E", "x": "X"}
    assert Lexer().process_word("$é1.", env) == "E."
    assert Lexer().process_word("$x²", env) == "X²"  # ² is a number, not a decimal digit


def test_special_and_positional_parameters_can_come_from_the_env():
    assert Lexer().process_word("$0 $12x ${#}", {"0": "zero", "12": "twelve", "#": "n"}) == "zero twelvex n"


def test_a_leading_byte_order_mark_is_dropped_as_go_does():
    assert Lexer().process_word("\ufeffabc", {}) == "abc"
    assert Lexer().process_word("a\ufeffbc", {}) == "a\ufeffbc"


@pytest.mark.parametrize(("word", "value", "expected"), [
    ("${V//*/x}", "ab", "x"),                # an empty match right after a match is not replaced
    ("${V//\\*/-}", "a*b*", "a-b-"),
    ("${V/b/[$0]}", "abc", "a[]c"),          # $0 is a (never set) special parameter
    ("${V/b/[$REP]}", "abc", "a[$0]c"),      # the first-match form inserts the text as it is
    ("${V//b/<$REP>}", "abcb", "a<b>c<b>"),  # replace-all follows Go's template rules: $0 is the match
    ("${V#[a]}", "[a]x", "x"),               # brackets are literal, as in BuildKit
    ("${V%%.*}", "app.tar.gz", "app"),
    ("${V%.*}", "app.tar.gz", "app.tar"),
    ("${V##*/}", "/usr/local/bin", "bin"),
    ("${V#*/}", "/usr/local/bin", "usr/local/bin"),
    ("${V/#/x}", "abc", "abc"),              # no bash anchors: `#` is a literal
    ("${V//a?/_}", "abacad", "___"),
])
def test_pattern_operators(word: str, value: str, expected: str):
    assert Lexer().process_word(word, {"V": value, "REP": "$0"}) == expected


@pytest.mark.parametrize(("word", "reason"), [
    ("${", "missing '}'"),
    ("${X", "missing '}'"),
    ("${X:-a", "missing '}'"),
    ("${}", "bad substitution"),
    ("${:-x}", "bad substitution"),
    ("${X:=a}", "unsupported modifier (:=)"),
    ("${SET#\\a}", "invalid escape"),
    ("${X/a}", "missing '/'"),
    ("'abc", "single-quote"),
    ('"abc', "double-quote"),
    ("${X:?must be set}", "X: must be set"),
    ("${X?}", "X: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
])
def test_errors_say_what_is_wrong(word: str, reason: str):
    with pytest.raises(ExpansionError) as info:
        Lexer().process_word(word, {"SET": "x", "EMPTY": ""})
    error = info.value
    assert isinstance(error, PybuildError)
    assert reason in error.reason and reason in str(error)
    assert error.word == word
    assert "\n" not in str(error)


def test_error_messages_stay_on_one_bounded_line():
    word = "${X:?line one\nline two}" + "y" * 10_000
    with pytest.raises(ExpansionError) as info:
        Lexer().process_word(word, {})
    message = str(info.value)
    assert "\n" not in message and len(message) < 600
    assert "line one\\nline two" in message


def test_absurd_nesting_is_refused_cleanly():
    deep = "${A:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(ExpansionError, match="nested"):
        Lexer().process_word(deep, {})
    assert Lexer().process_word("${A:-" * 50 + "x" + "}" * 50, {}) == "x"


def test_patterns_with_many_stars_run_in_linear_time():
    # Backtracking would need about 5000**6 steps here; the linear matcher does not.
    value = "a" * 5000
    assert Lexer().process_word("${V##*a*a*a*a*a*b}", {"V": value}) == value
    assert Lexer().process_word("${V%%a*a*a*a*a*b*}", {"V": value}) == value
    assert Lexer().process_word("${V//a*a*a*b/x}", {"V": value}) == value
    assert Lexer().process_word("${V#*a*a*a*a}", {"V": value}) == value[4:]


def test_long_words_are_fine():
    word = "$A/" * 20_000
    assert Lexer().process_word(word, {"A": "a"}) == "a/" * 20_000
    assert len(Lexer().process_words(word.replace("/", " "), {"A": "a"})) == 20_000


@pytest.mark.parametrize(("word", "env", "expected"), [
    ("${+x}", {}, ""),                       # an empty name, then `+`: the empty name is unset
    ("${/a/b}", {"": "cab"}, "cbb"),         # an empty name can even be set
    ("${V#$P}", {"V": "aab", "P": "#a"}, "ab"),  # `##` is recognised after expansion
])
def test_buildkit_quirks_are_kept(word: str, env: dict, expected: str):
    """Odd corners, each checked against BuildKit's own lexer."""
    assert Lexer().process_word(word, env) == expected


@pytest.mark.parametrize(("word", "reason"), [
    ("${a:}b}", "unsupported modifier (:})"),  # whatever follows `:` is the modifier
    ("${-x}", "unsupported modifier (x)"),     # `-` is a special parameter's name here
])
def test_buildkit_quirk_errors_are_kept(word: str, reason: str):
    with pytest.raises(ExpansionError, match=re.escape(reason)):
        Lexer().process_word(word, {"a": "1"})


def test_text_before_a_nested_expansion_stays_in_its_word():
    """Deliberate divergence: BuildKit revisions whose nested scans share one
    words buffer drop "ab" here and give ["cd", "e"]; the expanded string is
    the same either way, only the split differs."""
    assert Lexer().process_words("ab${X:-c}d e", {}) == ["abcd", "e"]
    assert Lexer().process_words('x"${A:-b}" y', {}) == ["xb", "y"]


# --- properties -------------------------------------------------------------------

SHELLISH = st.text(alphabet=st.sampled_from(list("$${}:-+?#%/'\"\\`*[]<ab Z_01\t\né")), max_size=40)
LEXERS = st.builds(Lexer, escape=st.sampled_from(["\\", "`"]), raw_quotes=st.booleans(),
                   raw_escapes=st.booleans(), skip_process_quotes=st.booleans(),
                   skip_unset_env=st.booleans())
ENVS = st.dictionaries(st.sampled_from(["a", "b", "Z", "_", "0", "#", "ab"]),
                       st.text(alphabet=st.sampled_from(list("ab *?\\$/ ")), max_size=6), max_size=4)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lexer=LEXERS, word=SHELLISH, env=ENVS)
def test_random_text_only_ever_raises_expansion_errors(lexer: Lexer, word: str, env: dict):
    try:
        result = lexer.process_word(word, env)
    except ExpansionError as error:
        assert "\n" not in str(error)
        with pytest.raises(ExpansionError):
            lexer.process_words(word, env)
        return
    assert isinstance(result, str)
    words = lexer.process_words(word, env)
    assert all(isinstance(w, str) and w for w in words)
    again, used, unset = lexer.process_word_with_matches(word, env)
    assert again == result
    assert used <= set(env) and not (unset & set(env))


GLOBS = st.text(alphabet=st.sampled_from(list("ab*?\\")), max_size=8)
VALUES = st.text(alphabet=st.sampled_from(list("ab*?\\\n")), max_size=12)


@settings(max_examples=1000, deadline=None)
@given(pattern=GLOBS, value=VALUES, greedy=st.booleans(), pos=st.integers(0, 12))
def test_the_linear_matcher_agrees_with_the_regex_engine(pattern: str, value: str, greedy: bool, pos: int):
    """Two independent ways to find leftmost-first glob matches must agree."""
    try:
        glob = shell._compile_glob(pattern, greedy)
    except shell._Fail:
        return  # an invalid escape: no matcher involved
    pos = min(pos, len(value))
    anchored = glob.regex.match(value)
    assert glob._linear(value, 0, anchored=True) == (anchored.span() if anchored else None)
    found = glob.regex.search(value, pos)
    assert glob._linear(value, pos, anchored=False) == (found.span() if found else None)


@settings(max_examples=500, deadline=None)
@given(word=st.text().filter(lambda w: not (set(w) & set("$'\"\\")) and not w.startswith("\ufeff")),
       env=ENVS)
def test_a_word_without_dollar_quotes_or_escapes_comes_back_unchanged(word: str, env: dict):
    assert Lexer().process_word(word, env) is word
    assert Lexer().process_word_with_matches(word, env) == (word, frozenset(), frozenset())


@settings(max_examples=500, deadline=None)
@given(word=SHELLISH.filter(lambda w: not (set(w) & set("$'\"\\"))))
def test_the_fast_path_agrees_with_a_full_scan(word: str):
    """An empty expansion forces the full scan without changing the meaning."""
    env = {"EMPTY": ""}
    lexer = Lexer()
    assert lexer.process_word(word, env) == lexer.process_word(word + "${EMPTY}", env) == word
    assert lexer.process_words(word, env) == lexer.process_words(word + "${EMPTY}", env)
