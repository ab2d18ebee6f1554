"""Teacher answers kept in the repository, so that a long benchmark run can be made again on a new machine.

    python benchmarks/answers.py export RUN_DIR benchmarks/answers/NAME.jsonl.gz   # a run's teacher cache, gzipped
    python benchmarks/answers.py seed benchmarks/answers/NAME.jsonl.gz RUN_DIR     # into a (new) run's cache

A run folder's teacher-cache.sqlite holds every answer its teacher gave, keyed by (teacher model, template hash,
document-text hash, label-text hash): the keys name no file or machine, so the same documents, labels, prompt and
teacher find the same answers anywhere. The run folders themselves (encoders, label embeddings: gigabytes at
783,728 labels) stay out of git; a few thousand answers are a few hundred kB. A run whose cache was seeded this way
asks the teacher only for pairs it lacks: its teacher pairs (distinct pairs judged) are those of a fresh run, its
seconds are not, and the results tables mark it "seeded".
"""

from __future__ import annotations

import argparse
import gzip
import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIELDS = ("model", "template", "doc", "label", "p_yes", "mass", "created")


def _cache_file(path: Path) -> Path:
    return path / "teacher-cache.sqlite" if path.is_dir() else path


def export(src: Path, out: Path) -> int:
    """Every answer of a run folder's (or a cache file's) cache, one JSON object a line, in key order."""
    from lmtx.store.files import replacing

    db = sqlite3.connect(f"file:{_cache_file(src)}?mode=ro", uri=True)
    rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM answers ORDER BY model, template, doc, label").fetchall()
    db.close()
    text = "".join(json.dumps(dict(zip(FIELDS, r))) + "\n" for r in rows)
    with replacing(out, f"write:{out.name}") as tmp:
        tmp.write_bytes(gzip.compress(text.encode(), mtime=0))  # the same answers give the same bytes
    return len(rows)


def read(path: Path) -> list[tuple]:
    """The answers of an exported file; names the line and field of a malformed one."""
    rows = []
    with gzip.open(path, "rt") as f:
        for n, line in enumerate(f, 1):
            try:
                r = json.loads(line)
                row = tuple(r[k] for k in FIELDS)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise SystemExit(f"{path}:{n}: not an answer ({type(e).__name__}: {e})") from None
            if not (0.0 <= float(row[4]) <= 1.0) or float(row[5]) <= 0:
                raise SystemExit(f"{path}:{n}: p_yes must lie in [0, 1] and mass be > 0")
            rows.append(row)
    return rows


def seed(src: Path, run: Path) -> int:
    """Add an exported file's answers (or another cache's) to a run's cache; answers already there are kept.
    Returns how many were new."""
    from lmtx.teacher.cache import AnswerCache

    cache = AnswerCache(run if run.suffix == ".sqlite" else run / "teacher-cache.sqlite")
    before = len(cache)
    if src.suffix == ".gz":
        cache.db.executemany("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?)", read(src))
    else:
        cache.db.execute("ATTACH DATABASE ? AS src", (str(_cache_file(src)),))
        cache.db.execute("INSERT OR IGNORE INTO answers SELECT * FROM src.answers")
        cache.db.commit()
        cache.db.execute("DETACH DATABASE src")
    cache.db.commit()
    new = len(cache) - before
    cache.close()
    return new


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="a run's teacher cache to a .jsonl.gz file")
    e.add_argument("run", type=Path, help="run folder or teacher-cache.sqlite")
    e.add_argument("out", type=Path)
    s = sub.add_parser("seed", help="a .jsonl.gz file's (or a cache's) answers into a run folder's cache")
    s.add_argument("src", type=Path)
    s.add_argument("run", type=Path, help="run folder (made if missing) or teacher-cache.sqlite")
    a = ap.parse_args()
    if a.cmd == "export":
        print(f"{export(a.run, a.out)} answers -> {a.out}")
    else:
        print(f"{seed(a.src, a.run)} new answers -> {a.run}")


if __name__ == "__main__":
    main()
