"""A local Ray instance shares lmtx's fate: the watchdog lmtx starts beside a Ray it launched itself.

ray.shutdown() stops the instance lmtx started, but a SIGKILLed lmtx runs no exit handler, and Ray's own fate sharing
ends the raylet and leaves its agents (DashboardAgent, RuntimeEnvAgent) orphaned. This watchdog holds the read end of
a pipe whose write end only lmtx holds, so the pipe closes when lmtx ends, however it ends. "done" on the pipe means
lmtx shut Ray down itself; a bare end of file means lmtx died, and the watchdog stops the instance's processes and
every descendant it has seen (it looks every second, while they are still descendants), TERM then KILL, each checked
to be the same process (its start time) before it is signalled.

Run as a script (``python watchdog.py PID...``, by lmtx.search.ray_engine.start_watchdog): standard library only.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    s = _stat(pid)
    return s[19] if s else None


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its entry is left until it is reaped)."""
    s = _stat(pid)
    return s is not None and s[0] != "Z"


def descendants(seen: dict[int, str | None]) -> dict[int, str | None]:
    """``seen`` (pid -> start time) grown by every living descendant of its processes; returned."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (s := _stat(int(d))) is not None:
            kids.setdefault(int(s[1]), []).append(int(d))
    todo = list(seen)
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in seen and (t := start_time(c)) is not None:
                seen[c] = t
                todo.append(c)
    return seen


def watch(pids: list[int]) -> None:
    seen = {p: start_time(p) for p in pids}
    msg = b""
    while True:
        descendants(seen)
        if select.select([sys.stdin.buffer], [], [], 1.0)[0]:
            chunk = os.read(sys.stdin.fileno(), 64)
            msg += chunk
            if not chunk or msg.strip() == b"done":
                break
    if msg.strip() == b"done":
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p, t in seen.items():
            if t is not None and start_time(p) == t:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
        time.sleep(2)


if __name__ == "__main__":
    watch([int(a) for a in sys.argv[1:]])
