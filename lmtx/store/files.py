"""The one way lmtx writes a file or folder: into a temporary sibling, then renamed over the target, so a reader
(or a process killed mid-write, and its rerun) never sees a half-written result."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import drill


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextmanager
def replacing(
    path: str | Path, point: str | None = None, swap_point: str | None = None, per_process: bool = False
) -> Iterator[Path]:
    """Yields the temporary sibling of ``path`` (``NAME.tmp``; ``NAME.tmpPID`` with ``per_process``, where two
    processes may build the same thing at once) to write a file or a folder into; when the block ends without an
    error, renames it over ``path``, replacing an old file or folder. ``point``: the failpoint (lmtx.store.drill)
    passed just before the rename; ``swap_point``: after an old folder is removed and before the new one takes its
    place. On an error the temporary is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + (f".tmp{os.getpid()}" if per_process else ".tmp"))
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if point:
        drill.point(point)
    if tmp.is_dir() and path.exists():
        _remove(path)
        if swap_point:
            drill.point(swap_point)
    os.replace(tmp, path)
