"""Teacher + student evidence, fused per round, label-free.

Each judged (document, candidate) pair has three views of "is this label right for this document":

* ``teacher``: the teacher's log-odds, logit(P(yes));
* ``student``: the current encoder's cosine similarity;
* ``lexical``: TF-IDF cosine between the document and the label text (cheap, independent of both).

Only the ranking *within* a document matters for the pseudo-positive, so each view is centered per
document and scaled by its global standard deviation (a teacher that barely prefers one candidate keeps
a small score; a per-document z-score would blow it up).

How much each view is worth is estimated without labels with the one-factor (triad) identity: if view
i is r_i * y + independent noise (unit variance, y the hidden relevance), the correlation of views i and
k is r_i * r_k, so r_i = sqrt(rho_ij * rho_ik / rho_jk). The fused score is the least-squares optimal
combination sum_i r_i / (1 - r_i^2) * z_i of the teacher and student views (the lexical view only
serves as the third witness; it is not a teacher). ``r`` estimates how well each view tracks relevance:
a student with r above the teacher's is the better ranker of the candidates, and the loop says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import fusion_weight

R_MIN, R_MAX = 0.02, 0.95


def _centered(values: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """Subtract each document's mean, divide by the global std of what is left (shape kept)."""
    s = pd.Series(values)
    c = (s - s.groupby(doc).transform("mean")).to_numpy()
    sd = c.std()
    return c / sd if sd > 1e-12 else np.zeros_like(c)


def teacher_logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(np.asarray(p, float), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def lexical_similarity(
    doc_texts: list[str], label_texts: list[str], doc_idx: np.ndarray, label_idx: np.ndarray
) -> np.ndarray:
    """TF-IDF cosine of each (document, label) pair; the vocabulary is fitted on both sides."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    used_docs, dinv = np.unique(doc_idx, return_inverse=True)
    used_labels, linv = np.unique(label_idx, return_inverse=True)
    dt = [doc_texts[i] for i in used_docs]
    lt = [label_texts[i] for i in used_labels]
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    try:
        vec.fit(dt + lt)
    except ValueError:  # empty vocabulary (no words at all)
        return np.zeros(len(doc_idx))
    D, L = vec.transform(dt), vec.transform(lt)
    return np.asarray(D[dinv].multiply(L[linv]).sum(axis=1)).ravel()


@dataclass
class ViewQuality:
    """Label-free estimates of how well each view tracks relevance (correlation with it), and the
    fusion weights they imply."""

    r_teacher: float | None
    r_student: float | None
    r_lexical: float | None
    w_teacher: float
    w_student: float
    pairs: int
    method: str  # triad | fixed (too few pairs, or a degenerate view)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def estimate_quality(zt: np.ndarray, zs: np.ndarray, zl: np.ndarray, min_pairs: int = 30) -> ViewQuality:
    n = len(zt)
    views = np.stack([zt, zs, zl])
    if n < min_pairs or np.any(views.std(axis=1) < 1e-12):
        return ViewQuality(None, None, None, 0.5, 0.5, n, "fixed")
    C = np.corrcoef(views)
    r = []
    for i in range(3):
        j, k = [x for x in range(3) if x != i]
        num, den = C[i, j] * C[i, k], C[j, k]
        # a negative or vanishing product means the one-factor model does not hold for this view
        r.append(float(np.sqrt(num / den)) if num > 0 and den > 1e-6 else R_MIN)
    r = [float(np.clip(x, R_MIN, R_MAX)) for x in r]
    w = [x / (1 - x * x) for x in r[:2]]
    tot = sum(w)
    return ViewQuality(r[0], r[1], r[2], w[0] / tot, w[1] / tot, n, "triad")


def fuse(
    j: pd.DataFrame,
    doc_texts: list[str],
    label_texts: list[str],
    mode: str = "auto",
    teacher_col: str = "p_yes",
    student_col: str = "similarity",
) -> tuple[np.ndarray, ViewQuality]:
    """Fused score per judged pair (higher = more likely relevant) and the view estimates.

    ``j``: columns doc, label, ``student_col`` (the student's score: its cosine, or its hybrid score with BM25),
    and ``teacher_col`` (P(yes)). ``mode``: auto (weights
    estimated label-free each round), equal, teacher (the teacher alone, as the paper), student, or ``w:X``
    (the teacher's weight X in [0, 1], the student's 1 - X).
    """
    doc = j["doc"].to_numpy()
    zt = _centered(teacher_logit(j[teacher_col].to_numpy()), doc)
    zs = _centered(j[student_col].to_numpy(float), doc)

    zl = _centered(lexical_similarity(doc_texts, label_texts, doc, j["label"].to_numpy()), doc)
    q = estimate_quality(zt, zs, zl)
    if mode == "equal":
        q.w_teacher, q.w_student = 0.5, 0.5
    elif mode == "teacher":
        q.w_teacher, q.w_student = 1.0, 0.0
    elif mode == "student":
        q.w_teacher, q.w_student = 0.0, 1.0
    elif mode.startswith("w:"):
        q.w_teacher = fusion_weight(mode)
        q.w_student = 1.0 - q.w_teacher
    elif mode != "auto":
        raise ValueError(f"unknown fusion mode {mode!r}")
    return q.w_teacher * zt + q.w_student * zs, q


def teacher_weaker(v: dict | None, slack: float = 0.15) -> bool:
    """Label-free: the student's estimated r exceeds the teacher's by more than ``slack``. The triad estimate leans
    toward the student (its errors and TF-IDF's are alike); the slack is set from the debtags runs with the 0.5B
    teacher (benchmarks/results/debtags.md, "teacher weaker")."""
    return bool(v and v.get("method") == "triad" and v["r_student"] > v["r_teacher"] + slack)
