"""Failpoints for the fault drills of ``benchmarks/reliability.py`` (off unless their variables are set).

``LMTX_DRILL_KILL=NAME[:N]`` kills the process with SIGKILL the N-th time (default the first) it passes the
point NAME, as a crash or ``kill -9`` would; ``LMTX_DRILL_LOG=FILE`` appends one line per teacher pair asked and
per answer committed to the cache, so a drill can count answers lost and pairs asked twice. Points are named
after what was just done: ``write:FILE`` (a temporary file is written, not yet renamed into place),
``teach:committed`` (a chunk of answers is in the cache), ``train:step`` (an optimizer step), ``tag:part``.
"""

from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("LMTX_DRILL_KILL")
    if not spec:
        return
    want, _, n = spec.rpartition(":") if spec.rsplit(":", 1)[-1].isdigit() else (spec, "", "1")
    if name != want:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def log(kind: str, model_id: str, pairs) -> None:
    path = os.environ.get("LMTX_DRILL_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.writelines(f"{kind}\t{model_id}\t{p.doc_hash}\t{p.label_hash}\n" for p in pairs)  # the cache's key
        f.flush()
        os.fsync(f.fileno())
