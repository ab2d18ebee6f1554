"""Hybrid ranking: the encoder's cosine and the labels' BM25 score, fused per document.

Each document gets a pool of labels: the dense side's top ``pool`` and the lexical side's top ``pool``. Every
label of the pool is scored on both sides exactly (its cosine with the document, its BM25 score), each side
standardized by the mean and standard deviation of the document's scores, and the two summed with weight ``w`` on
the dense side:

    hybrid(d, l) = w * (cos(d, l) - mu_dense(d)) / sd_dense(d) + (1 - w) * (bm25(d, l) - mu_lex(d)) / sd_lex(d)

``standardize`` says over which labels mu and sd are taken: ``labels`` (the default), every label of the set, exact
and cheap (the cosine's from the label embeddings' mean and second-moment matrix, BM25's from the full score vector
that the lexical top-k computes anyway), so a score says how far a label stands above the whole set and a weight
means the same on 411 labels as on 783,728; ``pool``, each side's own top ``pool`` (lmtx before it; a thin top tail
at 783k labels and half the set at 411, so the best weight moved with the label set's size:
benchmarks/results/standardize.md).

``penalty`` (retrieval.hubness): the dense side is ``cos(d, l) - penalty(l)``, ``penalty = beta * r(l)`` with r(l)
the label's mean cosine with its k nearest training documents (``label_hubness``; CSLS's local scaling): a hub label,
near many documents whatever they say, stops taking first place from better ones. The dense top-pool is still the
top cosines; its mean and standard deviation over every label are taken with the penalty, exactly (an extra
dimension: ``[label, -penalty]`` against ``[document, 1]``).

``w = 1`` is the encoder's own ranking, ``w = 0`` BM25's. A document with no word in the labels' vocabulary has no
lexical spread and is ranked by the dense side alone. The weight a run uses is chosen label-free, from the
teacher's ratings of each weight's top-1 label on the guard's held-out documents (``choose_weight``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import STANDARDIZE_MODES, RetrievalConfig, one_of

# dense weights the label-free choice compares (1.0 = dense only, 0.0 = lexical only)
WEIGHTS = (1.0, 0.8, 0.65, 0.5, 0.35, 0.0)
RETRIEVALS = ("dense", "lexical", "hybrid")


@dataclass
class Pools:
    """Per document (rows): pooled label indices (-1 = padding) and their dense / lexical scores, with each side's
    mean and standard deviation (over every label, or over the side's top-pool: ``standardize``)."""

    idx: np.ndarray  # (n, m) int64, -1 padded
    dense: np.ndarray  # (n, m) cosine
    lex: np.ndarray  # (n, m) BM25
    mu_d: np.ndarray  # (n,)
    sd_d: np.ndarray
    mu_l: np.ndarray
    sd_l: np.ndarray
    taught: np.ndarray | None = None  # (n, m): times the teacher confirmed each pooled label (retrieval.taught)

    def z(self, dense: np.ndarray, lex: np.ndarray, rows: np.ndarray | None = None):
        """Standardized (dense, lexical) scores of given values for documents ``rows`` (all when None)."""
        sl = slice(None) if rows is None else rows
        mu_d, sd_d, mu_l, sd_l = self.mu_d[sl], self.sd_d[sl], self.mu_l[sl], self.sd_l[sl]
        if dense.ndim == 2:
            mu_d, sd_d, mu_l, sd_l = (a[:, None] for a in (mu_d, sd_d, mu_l, sd_l))
        zd = (dense - mu_d) / sd_d
        zl = np.where(sd_l > 0, (lex - mu_l) / np.where(sd_l > 0, sd_l, 1.0), 0.0)
        return zd, zl

    def with_taught(self, counts: np.ndarray | None) -> "Pools":
        """These pools with each label's count of teacher-confirmed training documents (per label index; None:
        every label at the one weight): the fused score then weighs the lexical side per label (taught_weight)."""
        if counts is None:
            return replace(self, taught=None)
        return replace(self, taught=np.where(self.idx >= 0, counts[np.maximum(self.idx, 0)], 0))

    def scores(self, w: float) -> np.ndarray:
        zd, zl = self.z(self.dense, self.lex)
        w = w if self.taught is None else taught_weight(w, self.taught)
        s = w * zd + (1.0 - w) * zl
        return np.where(self.idx >= 0, s, -np.inf)

    def rank(self, w: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(label indices, scores), each (n, k), best first (ties: the lower label index first). ``w = 1`` gives
        exactly the dense ranking (scores: cosines, less any hubness penalty), ``w = 0`` the lexical one (BM25
        scores), else the fused score."""
        if w >= 1.0:
            s = np.where(self.idx >= 0, self.dense, -np.inf)
        elif w <= 0.0:
            s = np.where(self.idx >= 0, self.lex, -np.inf)
        else:
            s = self.scores(w)
        k = min(k, s.shape[1])
        big = np.where(self.idx >= 0, self.idx, np.iinfo(np.int64).max)
        order = np.lexsort((big, -s), axis=1)[:, :k]
        return np.take_along_axis(self.idx, order, 1), np.take_along_axis(s, order, 1)

    def pair(self, rows: np.ndarray, dense: np.ndarray, lex: np.ndarray, w: float) -> np.ndarray:
        """The fused score of arbitrary (document row, label) pairs given their cosine and BM25 score."""
        zd, zl = self.z(np.asarray(dense, float), np.asarray(lex, float), np.asarray(rows))
        return w * zd + (1.0 - w) * zl


def taught_weight(w: float, counts: np.ndarray) -> np.ndarray:
    """retrieval.taught shrink: the dense weight of a label the teacher confirmed on ``counts`` training documents,
    1 - (1 - w) / (1 + c). An untaught label keeps ``w``; the lexical share halves with the first confirmed document,
    is a third after two, and so on: the student's own score takes over as it is taught the label."""
    return 1.0 - (1.0 - w) / (1.0 + np.asarray(counts, np.float64))


def _per_label(counted, labels) -> np.ndarray:
    """(label id, count) items as counts per label index of ``labels`` (ids not in the set are skipped)."""
    counts = np.zeros(len(labels), np.int64)
    for lid, c in counted:
        i = labels.index.get(lid)
        if i is not None:
            counts[i] += int(c)
    return counts


def taught_counts(pairs, labels) -> np.ndarray:
    """Per label index of ``labels``: how many distinct (document id, label id) ``pairs`` name it (labels not in the
    set are skipped)."""
    from collections import Counter

    return _per_label(Counter(lid for _, lid in pairs).items(), labels)


def taught_file(round_dir: str | Path) -> Path:
    """Where a run keeps a round's taught labels (retrieval.taught): {label id: confirmed training documents}."""
    return Path(round_dir) / "taught.json"


def save_taught(round_dir: str | Path, counts: np.ndarray, labels) -> None:
    from ..store.rundir import write_json

    write_json(taught_file(round_dir), {labels[int(i)].id: int(counts[i]) for i in np.nonzero(counts)[0]})


def load_taught(path: str | Path, labels) -> np.ndarray:
    """A round's taught.json as counts per label index of ``labels`` (another label file: by label id; labels the
    run never saw count 0)."""
    from ..store.rundir import read_json

    return _per_label(read_json(Path(path)).items(), labels)


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=1)
    sd = x.std(axis=1)
    return mu, sd


def label_hubness(lemb: np.ndarray, temb: np.ndarray, k: int, chunk: int = 65_536) -> np.ndarray:
    """r(l): each label's mean cosine with its ``k`` nearest documents of ``temb`` (the run's training documents),
    float32, in label chunks (memory: chunk x documents)."""
    k = max(1, min(k, len(temb)))
    out = np.zeros(len(lemb), np.float32)
    if len(temb) == 0:
        return out
    t = np.ascontiguousarray(temb, np.float32)
    for a in range(0, len(lemb), chunk):
        s = np.asarray(lemb[a : a + chunk], np.float32) @ t.T
        out[a : a + chunk] = -np.partition(-s, k - 1, axis=1)[:, :k].mean(axis=1)
    return out


def hubness_file(round_dir: str | Path, labels, label_text: str) -> Path:
    """Where a run keeps a round's r(l) for one label set and label text (retrieval.hubness)."""
    from .encoder import fingerprint_labels

    return Path(round_dir) / f"hubness-{fingerprint_labels(labels, label_text)}.npy"


def label_moments(
    lemb: np.ndarray, chunk: int = 65_536, penalty: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The label embeddings' mean (dim,) and second-moment matrix (dim, dim), float64, read in chunks (a memory-mapped
    matrix is fine): each document's mean and standard deviation of cosine over every label follow exactly. With a
    hubness ``penalty``, of ``[label, -penalty]`` (dim + 1): the penalized score's."""
    n, dim = lemb.shape
    dim += penalty is not None
    s, m2 = np.zeros(dim), np.zeros((dim, dim))
    for a in range(0, n, chunk):
        x = np.asarray(lemb[a : a + chunk], np.float64)
        if penalty is not None:
            x = np.hstack([x, -np.asarray(penalty[a : a + chunk], np.float64)[:, None]])
        s += x.sum(axis=0)
        m2 += x.T @ x
    return s / max(n, 1), m2 / max(n, 1)


def dense_stats(demb: np.ndarray, moments: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each document's mean and standard deviation of its cosine with every label, from ``label_moments`` (with a
    penalty's extra dimension: of the penalized score)."""
    mean, m2 = moments
    d = np.asarray(demb, np.float64)
    if len(mean) == d.shape[1] + 1:
        d = np.hstack([d, np.ones((len(d), 1))])
    mu = d @ mean
    var = np.einsum("ij,ij->i", d @ m2, d) - mu**2
    return mu, np.sqrt(np.maximum(var, 0.0))


def build_pools(
    demb: np.ndarray,
    lemb: np.ndarray,
    d_idx: np.ndarray,
    d_sim: np.ndarray,
    l_idx: np.ndarray,
    l_sc: np.ndarray,
    lexical,
    texts: list[str],
    standardize: str = "labels",
    l_stats: tuple[np.ndarray, np.ndarray] | None = None,
    moments: tuple[np.ndarray, np.ndarray] | None = None,
    penalty: np.ndarray | None = None,
) -> Pools:
    """Pools from each side's top lists: d_idx/d_sim (dense top-pool, cosines), l_idx/l_sc (lexical top-pool, BM25).
    The cosine of each lexical-only label comes from ``demb`` x ``lemb``; the BM25 score of each dense-only label
    from ``lexical.pair_scores``. ``standardize`` labels: ``l_stats`` is each document's BM25 mean and standard
    deviation over every label (``lexical.topk_stats``; computed here when None), ``moments`` the labels'
    ``label_moments`` (computed here when None; callers that rank many document sets against one label matrix keep
    it; with a ``penalty``, ``label_moments(lemb, penalty=penalty)``); pool: each side's top-pool statistics.
    ``penalty``: the hubness penalty per label (None: none), subtracted from every pooled cosine."""
    one_of(standardize, STANDARDIZE_MODES, "standardize", ValueError)
    n = len(texts)
    if standardize == "pool":
        d_pen = d_sim if penalty is None else d_sim - penalty[d_idx]
        mu_d, sd_d = _stats(d_pen.astype(np.float64))
        mu_l, sd_l = _stats(l_sc.astype(np.float64))
    else:
        mu_d, sd_d = dense_stats(demb, moments if moments is not None else label_moments(lemb, penalty=penalty))
        mu_l, sd_l = l_stats if l_stats is not None else lexical.topk_stats(texts, 1)[2:]
        mu_l, sd_l = np.asarray(mu_l, np.float64), np.asarray(sd_l, np.float64)
    sd_d = np.where(sd_d > 1e-9, sd_d, 1.0)
    sd_l = np.where(sd_l > 1e-9, sd_l, 0.0)
    both = np.concatenate([d_idx, l_idx], axis=1)
    m = both.shape[1]
    # each row's distinct labels (sorted by label index; the order does not matter, ranks are by score)
    srt = np.sort(both, axis=1)
    idx = np.full((n, m), -1, np.int64)
    dense = np.zeros((n, m), np.float64)
    lex = np.zeros((n, m), np.float64)
    q = lexical.query_matrix(texts)
    for i in range(n):
        u = srt[i][np.concatenate([[True], srt[i][1:] != srt[i][:-1]])]
        idx[i, : len(u)] = u
    valid = idx >= 0
    rows = np.nonzero(valid)[0]
    labs = idx[valid]
    dense[valid] = np.einsum("ij,ij->i", demb[rows], lemb[labs])
    if penalty is not None:
        dense[valid] -= penalty[labs]
    lex[valid] = lexical.pair_scores(texts, rows, labs, q=q)
    return Pools(idx, dense, lex, mu_d, sd_d, mu_l, sd_l)


def penalized_topk(
    d_idx: np.ndarray, d_sim: np.ndarray, penalty: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k of each row of a dense top list (indices, cosines) re-ranked by ``cosine - penalty`` (ties: the
    lower label index first); unchanged when ``penalty`` is None."""
    if penalty is None:
        return d_idx[:, :k], d_sim[:, :k]
    s = d_sim - penalty[d_idx]
    order = np.lexsort((d_idx, -s), axis=1)[:, :k]
    return np.take_along_axis(d_idx, order, 1), np.take_along_axis(s, order, 1)


def mode_of(w: float) -> str:
    return "dense" if w >= 1.0 else "lexical" if w <= 0.0 else "hybrid"


# Standard errors by which another weight must beat the prior to replace it. Six weights are compared with the
# prior, so at one standard error noise alone moves it more often than not (on debtags it moved to 0.65 for a mean
# difference of 0.003 and cost 0.025 P@1); 2.5 is a one-sided 5% family-wise bar (Bonferroni over the six).
CHOICE_Z = 2.5


def choose_weight(ratings: dict[float, np.ndarray], prior: float, z: float = CHOICE_Z) -> tuple[float, dict]:
    """The dense weight to rank with, from the teacher's P(yes) of each weight's top-1 label on the same held-out
    documents (``ratings``: weight -> one value per document, ``prior`` among them). The prior stays unless another
    weight's paired mean difference to it is positive and above ``z`` standard errors; of those, the largest
    wins. A plain argmax follows noise: on the sample's 30 held-out documents it once moved from 0.8 to 0.5 for a
    mean difference of 0.0004, and P@1 fell from 0.537 to 0.467; at one standard error it moved on debtags for
    differences of 0.003 and lost 0.025 (see CHOICE_Z). Returns (weight, each weight's mean P(yes))."""
    means = {float(w): float(np.mean(p)) for w, p in ratings.items() if len(p)}
    if not means or prior not in ratings:
        return prior, means
    base = np.asarray(ratings[prior], float)
    best, gain = prior, 0.0
    for w, p in ratings.items():
        d = np.asarray(p, float) - base
        if len(d) < 2 or w == prior:
            continue
        m, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
        if m > 0 and m > z * se and m > gain:
            best, gain = float(w), m
    return best, means


class Ranker:
    """Top-k labels of texts by dense, lexical or hybrid retrieval: what `lmtx evaluate` and `lmtx tag` rank with.

    ``index``: the encoder's LabelIndex (exact or HNSW; its ``emb`` gives the cosine of lexical-only labels);
    ``lexical``: the labels' LexicalIndex (not needed for dense); ``w``: the dense weight of hybrid; ``penalty``: the
    hubness penalty per label (retrieval.hubness; None: none)."""

    def __init__(
        self,
        model,
        index,
        lexical,
        mode: str = "dense",
        w: float = 1.0,
        pool: int = RetrievalConfig.pool,
        batch_size: int = 64,
        standardize: str = RetrievalConfig.standardize,
        penalty: np.ndarray | None = None,
        taught: np.ndarray | None = None,
    ):
        if mode not in RETRIEVALS:
            raise ValueError(f"retrieval must be one of {', '.join(RETRIEVALS)}, got {mode!r}")
        one_of(standardize, STANDARDIZE_MODES, "standardize", ValueError)
        self.model, self.index, self.lexical, self.mode, self.w = model, index, lexical, mode, w
        self.pool, self.batch_size, self.standardize = pool, batch_size, standardize
        self.penalty, self.taught = penalty, taught
        self._moments = None  # label_moments of the index's matrix, once per ranker

    def describe(self) -> str:
        hub = "" if self.penalty is None or self.mode == "lexical" else ", hubness penalty"
        taught = "" if self.taught is None else ", lexical share shrunk for taught labels"
        return (f"hybrid (dense weight {self.w:g}" + hub + taught + ")") if self.mode == "hybrid" else self.mode + hub

    def rank(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(label indices, scores), each (len(texts), k), best first. Scores: cosine (dense; less the hubness penalty
        where one is set), BM25 (lexical) or the fused z-score sum (hybrid)."""
        from .encoder import embed

        if self.mode == "lexical":
            return self.lexical.topk(texts, k)
        demb = embed(self.model, list(texts), self.batch_size)
        if self.mode == "dense" and self.penalty is None:
            return self.index.query(demb, k)
        pool = max(self.pool, k)
        d_idx, d_sim = self.index.query(demb, pool)
        if self.mode == "dense":
            return penalized_topk(d_idx, d_sim, self.penalty, k)
        l_idx, l_sc, mu_l, sd_l = self.lexical.topk_stats(texts, pool)
        if self.standardize == "labels" and self._moments is None:
            self._moments = label_moments(self.index.emb, penalty=self.penalty)
        pools = build_pools(
            demb,
            self.index.emb,
            d_idx,
            d_sim,
            l_idx,
            l_sc,
            self.lexical,
            texts,
            self.standardize,
            (mu_l, sd_l),
            self._moments,
            self.penalty,
        )
        return pools.with_taught(self.taught).rank(self.w, k)
