"""The teacher cascade: a stronger, slower teacher asked only where the cheap teacher and the student disagree most,
within a budget of pairs over the whole run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .job import Job, make_pairs


@dataclass(frozen=True)
class Cascade:
    """What the strong teacher answered this round, and its documents and spending so far."""

    p_strong: pd.Series | None  # P(yes) by judged-pair row (NaN where it was not asked); None: not asked at all
    docs: frozenset  # documents the strong teacher judges (every judged pair of each)
    spent: int  # strong-teacher pairs asked over the run
    asked: int  # of which this round


def cascade(job: Job, j: pd.DataFrame, docs: frozenset, spent: int, r: int) -> Cascade:
    """Ask the strong teacher about every judged pair of the documents where the cheap teacher and the student
    disagree most (their top choices differ; the smallest fused margin first), within budget. ``j``: the round's
    judged pairs with p_yes, similarity and fused; ``docs``, ``spent``: the run's so far."""
    cfg, strong = job.cfg, job.strong
    docs = set(docs)
    rounds_left = cfg.loop.rounds - r + 1
    remaining = cfg.teacher.strong_budget - spent
    per_doc = j.groupby("doc").size()
    # pairs of documents already under the strong teacher that it has not answered yet (new candidates) come out
    # of the same budget; documents that no longer fit go back to the cheap teacher
    pending = {}
    for d in sorted(docs):
        sub = j[j["doc"] == d]
        got = job.cache.get_many(
            strong.model_id, job.template.hash, make_pairs(job.docs, job.labels, sub["doc"], sub["label"])
        )
        pending[d] = sum(g is None for g in got)
    for d in sorted(docs, reverse=True):
        if sum(pending.values()) <= remaining:
            break
        docs.discard(d)
        pending.pop(d)
    remaining -= sum(pending.values())
    budget = remaining // max(1, rounds_left)
    if budget > 0:
        g = j.groupby("doc")
        t_top = j.loc[g["p_yes"].idxmax(), ["doc", "label"]].set_index("doc")["label"]
        s_top = j.loc[g["similarity"].idxmax(), ["doc", "label"]].set_index("doc")["label"]
        top2 = g["fused"].apply(lambda x: np.sort(x.to_numpy())[::-1][:2])
        margin = top2.apply(lambda v: v[0] - v[1] if len(v) > 1 else np.inf)
        order = sorted(
            (int(d) for d in margin.index if int(d) not in docs),
            key=lambda d: (bool(t_top[d] == s_top[d]), float(margin[d])),
        )
        for d in order:
            if per_doc[d] > budget:
                break
            docs.add(d)
            budget -= per_doc[d]
    sel = j["doc"].isin(docs).to_numpy()
    if not sel.any():
        return Cascade(None, frozenset(docs), spent, 0)
    sub = j[sel]
    p, _, asked = job.ask(strong, job.docs, sub["doc"], sub["label"], f"round {r}: strong teacher")
    p_strong = pd.Series(np.nan, index=j.index)
    p_strong[sel] = p
    return Cascade(p_strong, frozenset(docs), spent + asked.pairs, asked.pairs)
