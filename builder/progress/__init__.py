"""Build progress: one interface, four displays (tty, plain, json, quiet).

The solver calls a ``Progress`` — ``started``, ``log``, ``finished`` — from
any thread; displays serialise their own output. ``plain`` is BuildKit-like
(``#3 [build 2/4] RUN make``, ``#3 CACHED``, ``#3 DONE 1.2s``), ``json`` is
one event per line (documented in docs/report.md), ``tty`` uses rich for a
live view with the tail of each running step's output, ``quiet`` prints
nothing (the CLI prints the image id).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from typing import TextIO


class Progress:
    """The interface the solver talks to; the base class shows nothing."""

    def started(self, num: int, label: str) -> None: ...
    def log(self, num: int, line: str) -> None: ...
    def finished(self, num: int, status: str, duration_s: float, detail: str = "") -> None: ...
    def warn(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def close(self) -> None: ...


class QuietProgress(Progress):
    pass


class PlainProgress(Progress):
    """Line by line, prefixed with the step number: for CI logs."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.labels: dict[int, str] = {}

    def _w(self, text: str) -> None:
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def started(self, num: int, label: str) -> None:
        self.labels[num] = label
        self._w(f"#{num} {label}")

    def log(self, num: int, line: str) -> None:
        self._w(f"#{num} {time.monotonic() - self.t0:.3f} {line.rstrip()}")

    def finished(self, num: int, status: str, duration_s: float, detail: str = "") -> None:
        if status == "CACHED":
            self._w(f"#{num} CACHED")
        elif status == "ERROR":
            self._w(f"#{num} ERROR: {detail}" if detail else f"#{num} ERROR")
        else:
            self._w(f"#{num} {status} {duration_s:.1f}s")

    def warn(self, message: str) -> None:
        self._w(f"WARNING: {message}")

    def info(self, message: str) -> None:
        self._w(message)


class JsonProgress(Progress):
    """One JSON object per line: {"event", "time", "step", ...}."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def _emit(self, event: str, **fields: object) -> None:
        fields = {"event": event, "time": round(time.time(), 3), **fields}
        with self.lock:
            self.stream.write(json.dumps(fields, ensure_ascii=False) + "\n")
            self.stream.flush()

    def started(self, num: int, label: str) -> None:
        self._emit("step_started", step=num, label=label)

    def log(self, num: int, line: str) -> None:
        self._emit("step_log", step=num, line=line.rstrip("\n"))

    def finished(self, num: int, status: str, duration_s: float, detail: str = "") -> None:
        self._emit("step_finished", step=num, status=status, duration_s=round(duration_s, 4),
                   detail=detail or None)

    def warn(self, message: str) -> None:
        self._emit("warning", message=message)

    def info(self, message: str) -> None:
        self._emit("info", message=message)


class TtyProgress(Progress):
    """A live view (rich): one line per running step with a timer and its output's tail."""

    TAIL = 6

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.lock = threading.Lock()
        self.running: dict[int, tuple[str, float, deque[str]]] = {}
        self.live = Live(console=self.console, refresh_per_second=8, transient=True,
                         get_renderable=self._render)
        self.live.start()

    def _render(self):
        from rich.text import Text

        text = Text()
        now = time.monotonic()
        with self.lock:
            for num, (label, t0, tail) in sorted(self.running.items()):
                text.append(f"[+] #{num} {label}", style="bold")
                text.append(f"  {now - t0:.1f}s\n", style="dim")
                for line in tail:
                    text.append(f"    {line[:200]}\n", style="dim")
        return text

    def started(self, num: int, label: str) -> None:
        with self.lock:
            self.running[num] = (label, time.monotonic(), deque(maxlen=self.TAIL))

    def log(self, num: int, line: str) -> None:
        with self.lock:
            if num in self.running:
                self.running[num][2].append(line.rstrip())

    def finished(self, num: int, status: str, duration_s: float, detail: str = "") -> None:
        with self.lock:
            label = self.running.pop(num, ("", 0.0, deque()))[0]
        style = {"CACHED": "blue", "DONE": "green", "ERROR": "red"}.get(status, "")
        timing = "" if status == "CACHED" else f" {duration_s:.1f}s"
        extra = f": {detail}" if detail and status == "ERROR" else ""
        self.console.print(f"[{style}]✔[/] #{num} {label} [{style}]{status}{timing}[/]{extra}"
                           if status != "ERROR" else
                           f"[red]✘[/] #{num} {label} [red]ERROR[/]{extra}", highlight=False, markup=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]WARNING:[/] {message}", highlight=False)

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def close(self) -> None:
        self.live.stop()


def make_progress(mode: str = "auto", stream: TextIO = sys.stderr) -> Progress:
    """The display for ``--progress``: auto picks tty on a terminal, plain otherwise."""
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "tty":
        return TtyProgress(stream)
    if mode == "plain":
        return PlainProgress(stream)
    if mode == "json":
        return JsonProgress(stream)
    if mode == "quiet":
        return QuietProgress()
    from builder.errors import UsageError

    raise UsageError(f"invalid --progress value {mode!r}: expected auto, tty, plain, json or quiet")
