"""SQLite answer cache, keyed by (teacher model, template hash, document hash, label hash).

Only finished answers are stored (a failure raises before anything is written), and every chunk is
committed before the next one is asked, so an interrupted run loses at most the chunk in flight.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from ..store import drill
from .base import Judgment, Pair, PartialAnswers, Teacher

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL, template TEXT NOT NULL, doc TEXT NOT NULL, label TEXT NOT NULL,
    p_yes REAL NOT NULL, mass REAL NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (model, template, doc, label)
)"""


class AnswerCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(SCHEMA)
            self.db.commit()
        except sqlite3.DatabaseError as e:
            from .base import TeacherError

            raise TeacherError(
                f"{self.path}: the teacher answer cache is damaged ({e}); move it away to ask the "
                f"teacher again (answers in it are lost)"
            ) from None

    def close(self):
        self.db.close()

    def get_many(self, model: str, template: str, pairs: Sequence[Pair]) -> list[Judgment | None]:
        out: list[Judgment | None] = []
        q = "SELECT p_yes, mass FROM answers WHERE model=? AND template=? AND doc=? AND label=?"
        for p in pairs:
            row = self.db.execute(q, (model, template, p.doc_hash, p.label_hash)).fetchone()
            out.append(Judgment(*row) if row and row[1] > 0 else None)  # mass 0: unreadable, ask again
        return out

    def put_many(self, model: str, template: str, pairs: Sequence[Pair], answers: Sequence[Judgment]):
        now = time.time()
        self.db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?)",
            [
                (model, template, p.doc_hash, p.label_hash, a.p_yes, a.mass, now)
                for p, a in zip(pairs, answers)
                if a.mass > 0
            ],  # an answer without yes/no mass is not an answer: never cached
        )
        self.db.commit()

    def __len__(self):
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def _doc_chunks(pairs: Sequence[Pair], target: int):
    """Split into chunks of about ``target`` pairs without cutting a document's candidates apart."""
    chunk: list[Pair] = []
    for p in pairs:
        if len(chunk) >= target and p.doc_id != chunk[-1].doc_id:
            yield chunk
            chunk = []
        chunk.append(p)
    if chunk:
        yield chunk


def score_cached(
    teacher: Teacher,
    template_hash: str,
    pairs: Sequence[Pair],
    cache: AnswerCache | None,
    chunk_pairs: int | None = None,
    progress: Callable[[int], None] | None = None,
    new: set | None = None,
) -> tuple[list[Judgment], int]:
    """Answers for every pair, asking the teacher only for what the cache lacks, and each prompt once: pairs
    under one cache key (the same document text and label text, e.g. two labels of one name asked without their
    descriptions) share one answer.

    Returns (answers in order, number of prompts the teacher was asked); ``new``, when given, receives every pair
    whose answer did not come from the cache.
    """
    known = cache.get_many(teacher.model_id, template_hash, pairs) if cache is not None else [None] * len(pairs)
    same: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(known):
        if a is None:
            same.setdefault((pairs[i].doc_hash, pairs[i].label_hash), []).append(i)
            if new is not None:
                new.add(pairs[i])
    todo = [ix[0] for ix in same.values()]
    answers = list(known)
    if progress and len(pairs) - len(todo):
        progress(len(pairs) - len(todo))
    todo_pairs = [pairs[i] for i in todo]
    chunk_pairs = chunk_pairs or getattr(teacher, "chunk_pairs", 32)
    pos = 0
    for chunk in _doc_chunks(todo_pairs, chunk_pairs):
        drill.log("asked", teacher.model_id, chunk)
        try:
            got = teacher.score(chunk)
        except PartialAnswers as e:
            if cache is not None and e.answers:  # keep every answer that arrived before the failure
                keep = sorted(e.answers)
                cache.put_many(teacher.model_id, template_hash, [chunk[k] for k in keep], [e.answers[k] for k in keep])
            raise
        if len(got) != len(chunk):
            raise RuntimeError(f"teacher {teacher.model_id} returned {len(got)} answers for {len(chunk)} pairs")
        if cache is not None:
            cache.put_many(teacher.model_id, template_hash, chunk, got)
            drill.log("committed", teacher.model_id, chunk)
            drill.point("teach:committed")
        for a in got:
            p = pairs[todo[pos]]
            for i in same[(p.doc_hash, p.label_hash)]:
                answers[i] = a
            pos += 1
        if progress:
            progress(len(chunk))
    return answers, len(todo)  # type: ignore[return-value]


def describe_forms(pairs: Sequence[Pair], describe: str, template) -> list[list[Pair]]:
    """The forms each pair is asked in (teacher.describe): as written (yes), with the description left out (no: the
    template renders a label without one as its name alone), or both (their P(yes) averaged). A template without
    ({description}) shows no description either way: one form."""
    pairs = list(pairs)
    if describe == "yes" or not template.shows_description:
        return [pairs]
    # a label whose description is empty or its name is shown as its name either way: the same pair, asked once
    bare = [
        replace(p, description="") if p.description and p.description.strip() != p.label.strip() else p for p in pairs
    ]
    return [bare] if describe == "no" else [pairs, bare]


def _grouped(forms: list[list[Pair]]) -> list[Pair]:
    """Every form's pairs, each document's together (documents in first-seen order; a pair asked once)."""
    by_doc: dict[str, dict[Pair, None]] = {}
    for form in forms:
        for p in form:
            by_doc.setdefault(p.doc_id, {})[p] = None
    return [p for ps in by_doc.values() for p in ps]


class Asked(NamedTuple):
    """What the teacher was asked (answers from the cache not counted): (document, label) pairs, and prompts, which
    differ under teacher.describe both (a pair is two prompts, its description shown and left out)."""

    pairs: int = 0
    prompts: int = 0

    def __add__(self, other) -> "Asked":  # type: ignore[override]
        return Asked(self.pairs + other.pairs, self.prompts + other.prompts)


class Described(NamedTuple):
    p_yes: object  # (n,) numpy array
    mass: object  # (n,) numpy array
    asked: Asked


def score_described(
    teacher: Teacher,
    template,
    pairs: Sequence[Pair],
    cache: AnswerCache | None,
    describe: str = "yes",
    progress: Callable[[int], None] | None = None,
) -> Described:
    """P(yes) and yes+no mass per pair (numpy arrays) in the teacher.describe form(s), and what the teacher was asked
    (Asked: pairs with at least one prompt not in the cache, and prompts). With both, each document's prompts of both
    forms go to the teacher together (one document prefix for all of them). A SIMULATED teacher answers from gold
    labels, not from the prompt: one form."""
    import numpy as np

    how = "yes" if getattr(teacher, "simulated", False) else describe
    forms = describe_forms(pairs, how, template)
    asks = forms[0] if len(forms) == 1 else _grouped(forms)
    new: set = set()
    answers, prompts = score_cached(
        teacher,
        template.hash,
        asks,
        cache,
        progress=(lambda n: progress(n / len(forms))) if progress else None,
        new=new,
    )
    asked = Asked(sum(any(f[i] in new for f in forms) for i in range(len(forms[0]))) if new else 0, prompts)
    if len(forms) == 1:
        return Described(np.array([a.p_yes for a in answers]), np.array([a.mass for a in answers]), asked)
    got = dict(zip(asks, answers))
    per = [[got[p] for p in form] for form in forms]
    p_yes = np.mean([[a.p_yes for a in f] for f in per], axis=0)
    mass = np.mean([[a.mass for a in f] for f in per], axis=0)
    return Described(p_yes, mass, asked)
