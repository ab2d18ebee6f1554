"""A round's encoder scored against gold: reported in metrics.json, never used by the run."""

from __future__ import annotations

import numpy as np

from ..evaluation.metrics import propensities, ranking_metrics
from ..search.encoder import embed
from ..search.hybrid import mode_of
from ..store.data import stable_key
from .job import Job

EVAL_SAMPLE_AUTO = 1_000  # eval documents per round when eval docs x labels exceeds EVAL_FULL_UP_TO
EVAL_FULL_UP_TO = 1_000_000_000
GOLD_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0)  # dense weights scored on gold (reported, not used)
RETRIEVAL_KEYS = ("P@1", "P@3", "P@5", "R@10", "nDCG@5")


def eval_sample(job: Job) -> list:
    """The fixed sample of eval documents each round is scored on (the same every round and run: by hash of id)."""
    docs = job.gold_eval_docs
    n = job.cfg.loop.eval_sample
    if n == -1:
        n = EVAL_SAMPLE_AUTO if len(docs) * len(job.labels) > EVAL_FULL_UP_TO else 0
    if n == 0 or n >= len(docs):
        return docs
    return sorted(docs, key=lambda d: stable_key("eval", d.id))[:n]


def score_encoder(
    job: Job,
    model,
    lemb: np.ndarray,
    show_progress: bool = False,
    weight: float | None = None,
    taught: np.ndarray | None = None,
) -> dict:
    """An encoder against gold, on the eval sample (said in the metrics: eval_docs, eval_sampled). The top-level
    keys are the encoder's own (dense) ranking; ``retrieval`` holds the lexical and hybrid rankings beside it, P@1 and
    R@10 at every dense weight, and (``weight``: the run's choice for this encoder) ``final``, the ranking the run hands
    out; with ``taught`` (retrieval.taught shrink or lagged: confirmed documents per label) its lexical share is
    shrunk per label, and ``hybrid`` is the same weight without the shrink."""
    docs = eval_sample(job)
    texts = [d.text for d in docs]
    demb = embed(model, texts, 64, show_progress, "embedding eval docs")
    pools = job.pools(lemb, demb, "eval", texts, exact=True, penalty=job.penalty(lemb, model))
    ids, gold = job.labels.ids, [set(d.labels) for d in docs]
    prop = propensities([set(d.labels) for d in job.gold_eval_docs])

    def score(w: float, p=pools) -> dict:
        idx, _ = p.rank(w, 10)
        return ranking_metrics([[ids[i] for i in row] for row in idx], gold, prop=prop)

    grid = {f"{w:g}": score(w) for w in GOLD_GRID}
    m, lex = grid["1"], grid["0"]
    by_w = {w: round(x["P@1"], 4) for w, x in grid.items()}
    best_w = max(by_w, key=lambda w: (by_w[w], float(w)))
    ret = {
        "dense": {k: m[k] for k in RETRIEVAL_KEYS},
        "lexical": {k: lex[k] for k in RETRIEVAL_KEYS},
        "P@1_by_weight": by_w,
        "R@10_by_weight": {w: round(x["R@10"], 4) for w, x in grid.items()},
        "best_weight_on_gold": float(best_w),
    }
    if weight is not None:
        fin = score(weight)
        shrink = taught is not None and 0.0 < weight < 1.0
        if shrink:
            ret["hybrid"] = {"dense_weight": weight} | {k: fin[k] for k in RETRIEVAL_KEYS}
            fin = score(weight, pools.with_taught(taught))
        ret["final"] = (
            {"mode": mode_of(weight), "dense_weight": weight}
            | ({"taught": job.cfg.retrieval.taught, "taught_labels": int((taught > 0).sum())} if shrink else {})
            | {k: fin[k] for k in RETRIEVAL_KEYS}
        )
    m["retrieval"] = ret
    return m | {"eval_docs": len(docs), "eval_sampled": len(docs) < len(job.gold_eval_docs)}
