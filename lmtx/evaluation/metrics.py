"""Ranking metrics for multi-label tagging: P@k, R@k, nDCG@k, PSP@k; and pseudo-label quality."""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np


def propensities(gold: Sequence[set], n_docs: int | None = None, A: float = 0.55, B: float = 1.5) -> dict:
    """Jain et al. (2016) propensity model: p_l = 1 / (1 + C exp(-A log(N_l + B))), C = (log N - 1)(B + 1)^A."""
    counts = Counter(l for g in gold for l in g)
    N = n_docs or len(gold)
    C = (math.log(N) - 1) * (B + 1) ** A
    return {l: 1.0 / (1.0 + C * math.exp(-A * math.log(n + B))) for l, n in counts.items()}


def ranking_metrics(
    ranked: Sequence[Sequence], gold: Sequence[set], ks=(1, 3, 5), recall_ks=(1, 3, 5, 10), prop: dict | None = None
) -> dict:
    """Averages over documents that have gold labels. ``ranked``: predicted label ids, best first."""
    pairs = [(list(r), set(g)) for r, g in zip(ranked, gold) if g]
    out: dict[str, float] = {}
    if not pairs:
        return out
    for k in ks:
        out[f"P@{k}"] = float(np.mean([len(set(r[:k]) & g) / k for r, g in pairs]))
    for k in recall_ks:
        out[f"R@{k}"] = float(np.mean([len(set(r[:k]) & g) / len(g) for r, g in pairs]))
    for k in ks:
        vals = []
        for r, g in pairs:
            dcg = sum(1.0 / math.log2(i + 2) for i, l in enumerate(r[:k]) if l in g)
            idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(g))))
            vals.append(dcg / idcg)
        out[f"nDCG@{k}"] = float(np.mean(vals))
    if prop is not None:
        for k in ks:
            num = den = 0.0
            for r, g in pairs:
                num += sum(1.0 / prop.get(l, 1.0) for l in r[:k] if l in g)
                den += sum(sorted((1.0 / prop.get(l, 1.0) for l in g), reverse=True)[:k])
            out[f"PSP@{k}"] = num / den if den else 0.0
    out["n_docs"] = len(pairs)
    return out


def evaluate_encoder(
    model,
    docs,
    labels,
    label_text: str = "description",
    k: int = 10,
    batch_size: int = 64,
    show_progress: bool = False,
    prop_docs=None,
    label_emb=None,
) -> dict:
    """Rank every label for every gold-labelled document by cosine (exact search) and score it. ``label_emb``:
    the labels' embeddings by this model when already computed (else they are encoded here)."""
    from ..search.index import rank_labels

    docs = [d for d in docs if d.labels]
    if not docs:
        return {}
    lemb = label_emb if label_emb is not None else [l.text(label_text) for l in labels.labels]
    idx, _ = rank_labels(model, [d.text for d in docs], lemb, k, batch_size=batch_size, show_progress=show_progress)
    ids = labels.ids
    ranked = [[ids[i] for i in row] for row in idx]
    gold = [set(d.labels) for d in docs]
    prop = propensities([set(d.labels) for d in (prop_docs or docs)])
    return ranking_metrics(ranked, gold, prop=prop)


def pseudo_label_quality(judged, examples, doc_ids, label_ids, gold: dict) -> dict:
    """How good the round's teaching was, against gold (reported only; never used to train)."""
    out = {}
    if not gold:
        return out
    pos = [(doc_ids[e.doc], label_ids[c]) for e in examples for c in e.choices[:1]]
    g_pos = [l in gold.get(d, set()) for d, l in pos if d in gold]
    if g_pos:
        out["pseudo_positive_precision"] = float(np.mean(g_pos))
    j = judged[[doc_ids[d] in gold for d in judged["doc"]]]
    if len(j):
        is_gold = np.array([label_ids[l] in gold[doc_ids[d]] for d, l in zip(j["doc"], j["label"])])
        yes = j["yes"].to_numpy()
        out["teacher_yes_rate"] = float(yes.mean())
        out["teacher_yes_precision"] = float(is_gold[yes].mean()) if yes.any() else 0.0
        out["teacher_yes_recall"] = float(yes[is_gold].mean()) if is_gold.any() else 0.0
        out["teacher_auc"] = auc(j["p_yes"].to_numpy(), is_gold)
        out["student_auc"] = auc(j["similarity"].to_numpy(), is_gold)
        for col, name in (("p_strong", "strong_teacher_auc"), ("fused", "fused_auc")):
            if col in j:
                sel = j[col].notna().to_numpy()
                if sel.any():
                    out[name] = auc(j[col].to_numpy()[sel], is_gold[sel])
        by_doc = [any(label_ids[l] in gold[doc_ids[d]] for l in g["label"]) for d, g in j.groupby("doc")]
        out[f"candidate_recall@{j.groupby('doc').size().max()}"] = float(np.mean(by_doc))
    return out


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC (scikit-learn's; ties count half), or None when one class is absent."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, np.asarray(scores, float)))
