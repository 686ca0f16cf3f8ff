"""Relaying a container's pty to our own stdin/stdout (``process.terminal``)."""
from __future__ import annotations

import errno
import os
import select
import termios
import tty

from .launcher import wait_exit


def relay(master: int, pid: int) -> int:
    """Copy stdin → pty and pty → stdout until the pty closes; return ``pid``'s exit code."""
    stdin_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_tty else None
    if stdin_tty:
        tty.setraw(0)
    watch = [master, 0]
    try:
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
    return wait_exit(pid)
