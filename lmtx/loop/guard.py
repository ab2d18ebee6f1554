"""The never-worse guard and the label-free choice of the retrieval weight, both from the teacher's ratings of the
encoders' top-1 labels on held-out training documents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..search.encoder import embed
from ..search.hybrid import WEIGHTS, choose_weight, mode_of, penalized_topk
from ..store.rundir import RunDir, read_parquet
from ..teacher.cache import Asked
from .job import Job


@dataclass(frozen=True)
class Rating:
    """The teacher's view of one encoder on the held-out documents."""

    score: float  # mean P(yes) of its top-1 labels
    rows: list  # (encoder round, doc id, label id, P(yes)) per held-out document
    asked: Asked  # pairs and prompts the teacher was asked (the rest came from the cache)
    choice: dict | None  # retrieval.mode auto: the dense weight chosen label-free, and each weight's mean P(yes)


def rate(job: Job, model, lemb: np.ndarray, r: int, enc_round: int) -> Rating:
    """The teacher's mean P(yes) on the encoder's top-1 label for each held-out document; with retrieval.mode auto
    also the label-free choice of the dense weight: the teacher rates each weight's top-1 label of the same
    documents (most coincide; only new pairs are asked) and the prior keeps its place unless another weight is
    rated higher by more than a standard error (lmtx.search.hybrid.choose_weight). Each weight ranks as the run
    would hand it out (retrieval.taught)."""
    texts = [d.text for d in job.guard_docs]
    demb = embed(model, texts, job.cfg.encoder.batch_size)
    auto = job.cfg.retrieval.mode == "auto"
    penalty = job.penalty(lemb, model)
    if auto:
        pools = job.pools(lemb, demb, "guard", texts, penalty=penalty).with_taught(job.taught(enc_round))
        prior = prior_weight(job.cfg, enc_round)
        tops = {w: [int(x) for x in pools.rank(w, 1)[0][:, 0]] for w in sorted({*WEIGHTS, prior}, reverse=True)}
        top1 = tops[1.0]
    else:
        idx, sim = job.retrieve(lemb, demb, job.cfg.retrieval.pool if penalty is not None else None)
        idx, _ = penalized_topk(idx, sim, penalty, 1)
        tops, top1 = {}, [int(row[0]) for row in idx]
    keys = sorted({(i, l) for t in [top1, *tops.values()] for i, l in enumerate(t)})
    p, _, asked = job.ask(job.teacher, job.guard_docs, [k[0] for k in keys], [k[1] for k in keys], f"round {r}: guard")
    got = dict(zip(keys, p))
    p1 = np.array([got[(i, l)] for i, l in enumerate(top1)])
    rows = [(enc_round, d.id, job.labels[l].id, float(x)) for d, l, x in zip(job.guard_docs, top1, p1)]
    choice = None
    if auto:
        w, means = choose_weight({w: np.array([got[(i, l)] for i, l in enumerate(t)]) for w, t in tops.items()}, prior)
        choice = {
            "dense_weight": w,
            "mode": mode_of(w),
            "label_free": {f"{k:g}": round(v, 4) for k, v in means.items()},
            "docs": len(texts),
        }
    return Rating(float(p1.mean()), rows, asked, choice)


def prior_weight(cfg: RunConfig, enc_round: int) -> float:
    """auto's prior dense weight for an encoder: retrieval.zero_shot_weight for the encoder as fetched (round 0),
    retrieval.dense_weight for one this run trained."""
    return cfg.retrieval.zero_shot_weight if enc_round == 0 else cfg.retrieval.dense_weight


def weight_of(cfg: RunConfig, choice: dict | None) -> float:
    """The dense weight an encoder ranks with: fixed by retrieval.mode, or its label-free choice (auto; dense
    only while none was made, e.g. with the guard off)."""
    mode = cfg.retrieval.mode
    if mode == "dense":
        return 1.0
    if mode == "lexical":
        return 0.0
    if mode == "hybrid":
        return cfg.retrieval.dense_weight
    return float(choice["dense_weight"]) if choice else 1.0


def paired_diff(run: RunDir, r: int, best_round: int) -> np.ndarray | None:
    """Per held-out document: P(yes) of round r's top-1 minus P(yes) of the best round's top-1 (the rows of
    every round's guard.parquet so far)."""
    parts = [read_parquet(p) for k in range(1, r + 1) if (p := run.round_dir(k) / "guard.parquet").exists()]
    if not parts:
        return None
    g = pd.concat(parts)
    a = g[g["encoder_round"] == r].drop_duplicates("doc_id").set_index("doc_id")["p_yes"]
    b = g[g["encoder_round"] == best_round].drop_duplicates("doc_id").set_index("doc_id")["p_yes"]
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).to_numpy() if len(common) else None


def decision(
    score: float, best: float, diff: np.ndarray | None, r: int, best_round: int, n: int, z: float = 2.0
) -> tuple[bool, str]:
    """Promote unless the round is worse by more than the noise of the held-out sample: the paired mean difference
    of the teacher's P(yes) on the two encoders' top-1 labels, below -z standard errors (loop.guard_z; and
    below 0)."""
    if diff is None or len(diff) < 2:
        se, m = 0.0, score - best
    else:
        m, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
    ok = not (m < 0 and m < -z * se)
    return ok, (
        f"teacher's mean P(yes) on the top-1 labels of {n} held-out documents: {score:.4f} (round {r}) vs "
        f"{best:.4f} (round {best_round}); paired difference {m:+.4f} (standard error {se:.4f}): "
        + ("not worse" if ok else "worse")
    )


def verdict(job: Job, r: int, best_round: int, scores: dict) -> tuple[bool, str]:
    """Is round r (its score in ``scores``, with its rows already on disk) promoted over the best round, and not
    worse than the initial encoder either (small declines, each within the noise, must not add up)?"""
    n, z = len(job.guard_docs), job.cfg.loop.guard_z
    ok, reason = decision(
        scores[str(r)], scores[str(best_round)], paired_diff(job.run, r, best_round), r, best_round, n, z
    )
    if ok and best_round != 0 and "0" in scores:
        ok0, reason0 = decision(scores[str(r)], scores["0"], paired_diff(job.run, r, 0), r, 0, n, z)
        if not ok0:
            return False, reason0
    return ok, reason
