"""Measure a teacher (and prompt) on labelled (document, candidate) pairs drawn like the training loop draws them.

Used to pick the default decision rule and by the benchmarks: AUC of P(yes) against gold, and for each
decision rule the precision / recall / F1 of "yes" against gold and how often the pseudo-positive
picked from the yes-labels is gold.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..learn.select import decide, select_positives
from ..store.data import Doc, LabelSet
from ..teacher.base import Pair
from ..teacher.cache import AnswerCache, score_described
from .metrics import auc

RULES = [
    "abs:0.5",
    "abs:0.7",
    "abs:0.9",
    "quantile:0.5",
    "quantile:0.7",
    "quantile:0.8",
    "quantile:0.9",
    "rel:0.0",
    "rel:0.02",
    "rel:0.05",
    "rel:0.1",
    "rel:0.2",
]


def candidate_pairs(
    encoder, docs: list[Doc], labels: LabelSet, j: int, label_text: str = "description", cache_for: str | None = None
):
    """The encoder's top-j labels per document as teacher pairs. ``cache_for``: the encoder's spec or folder, to
    reuse (or keep) its label matrix under LMTX_HOME/label-emb (783k labels: ~20 minutes to encode here)."""
    from ..search.encoder import label_embeddings
    from ..search.index import rank_labels

    lemb = (
        label_embeddings(encoder, labels, label_text, cache_for=cache_for)
        if cache_for
        else [l.text(label_text) for l in labels.labels]
    )
    idx, sim = rank_labels(encoder, [d.text for d in docs], lemb, j)
    rows, pairs = [], []
    for di, (ls, ss) in enumerate(zip(idx, sim)):
        for rank, (li, s) in enumerate(zip(ls, ss)):
            lab = labels[int(li)]
            pairs.append(Pair(docs[di].id, docs[di].text, lab.id, lab.name, lab.description))
            rows.append((di, int(li), rank, float(s), lab.id in set(docs[di].labels or ())))
    return pairs, pd.DataFrame(rows, columns=["doc", "label", "rank", "similarity", "gold"])


def evaluate_teacher(
    teacher,
    template,
    pairs,
    frame: pd.DataFrame,
    cache: AnswerCache | None = None,
    rules=RULES,
    progress=None,
    describe: str = "yes",
) -> dict:
    """The teacher's P(yes) on labelled pairs against gold, asked with ``template`` in the teacher.describe
    form(s) ``describe``."""
    t0 = time.time()
    tokens0 = getattr(teacher, "prompt_tokens", 0)
    p_yes, mass, got = score_described(teacher, template, pairs, cache, describe, progress=progress)
    asked = got.prompts  # prompts: the teacher's unit of work (two a pair under describe both)
    secs = time.time() - t0
    f = frame.copy()
    f["p_yes"] = p_yes
    f["mass"] = mass
    gold = f["gold"].to_numpy()
    out = {
        "teacher": teacher.model_id,
        "simulated": teacher.simulated,
        "pairs": len(f),
        "asked": asked,
        "pairs_asked": got.pairs,
        "docs": int(f["doc"].nunique()),
        "gold_share": float(gold.mean()),
        "auc": auc(f["p_yes"].to_numpy(), gold),
        "mean_p_yes_gold": float(f["p_yes"][gold].mean()) if gold.any() else None,
        "mean_p_yes_nongold": float(f["p_yes"][~gold].mean()) if (~gold).any() else None,
        "mean_mass": float(f["mass"].mean()),
        "seconds": secs,
        "pairs_per_s": asked / secs if asked and secs > 0 else None,
        "prompt_tokens_per_pair": (getattr(teacher, "prompt_tokens", 0) - tokens0) / asked if asked else None,
        "top_similarity_is_gold": float(f[f["rank"] == 0]["gold"].mean()),
        "top_p_yes_is_gold": float(f.loc[f.groupby("doc")["p_yes"].idxmax(), "gold"].mean()),
        "rules": {},
        "_p_yes": f["p_yes"].to_numpy(),
    }
    for rule in rules:
        yes = decide(f, rule)
        tp = float((yes & gold).sum())
        prec = tp / yes.sum() if yes.sum() else 0.0
        rec = tp / gold.sum() if gold.sum() else 0.0
        f["yes"] = yes
        ex = select_positives(f, "similarity")
        pos_gold = [bool(f[(f["doc"] == e.doc) & (f["label"] == e.choices[0])]["gold"].iloc[0]) for e in ex]
        out["rules"][rule] = {
            "yes_rate": float(yes.mean()),
            "precision": prec,
            "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "docs_taught": len(ex),
            "pseudo_positive_precision": float(np.mean(pos_gold)) if pos_gold else 0.0,
            # gold pseudo-positives per document: what the student actually gets to learn from
            "gold_positives_per_doc": float(np.sum(pos_gold)) / out["docs"],
        }
    return out
