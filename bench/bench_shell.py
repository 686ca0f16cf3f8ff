"""Benchmark: mean µs per ``Lexer.process_word`` on typical Dockerfile words.

The peer is the standard library's ``string.Template.safe_substitute``, which
does only ``$name``/``${name}`` (no quotes, escapes or modifiers): a floor for
what a Python expander can cost, measured in the same run.

    python bench/bench_shell.py [--number N]
"""
from __future__ import annotations

import argparse
import string
import timeit

from builder.frontend.shell import Lexer

ENV = {"HOME": "/root", "ARCH": "amd64", "PATH": "/usr/local/bin:/usr/bin:/bin", "NAME": "app"}
WORDS = {
    "plain": "/usr/local/bin",
    "$HOME/bin": "$HOME/bin",
    "${VERSION:-1.0}-${ARCH}": "${VERSION:-1.0}-${ARCH}",
    "quoted": '"$PATH:/opt/bin"',
    "pattern": "${NAME%%.*}-${ARCH#amd}",
}


def mean_us(fn, number: int) -> float:
    # Best of five repeats: the least disturbed by other processes.
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    lexer = Lexer()
    print(f"{'word':28} {'pybuild µs':>11} {'Template µs':>12} {'ratio':>7}")
    for label, word in WORDS.items():
        ours = mean_us(lambda: lexer.process_word(word, ENV), args.number)
        if "{" in word and ":" in word or '"' in word or "%" in word:
            print(f"{label:28} {ours:11.2f} {'n/a':>12} {'':>7}")
            continue
        template = string.Template(word)
        peer = mean_us(lambda: template.safe_substitute(ENV), args.number)
        print(f"{label:28} {ours:11.2f} {peer:12.2f} {ours / peer:6.2f}x")
    words = lambda: lexer.process_words("apt-get install -y $PKGS ${EXTRA:-curl} 'a b'", {"PKGS": "git make"})
    print(f"{'process_words (6 words)':28} {mean_us(words, args.number):11.2f}")


if __name__ == "__main__":
    main()
