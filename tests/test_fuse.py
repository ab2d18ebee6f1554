"""Teacher + student fusion (lmtx.learn.fuse) and pseudo-positive selection (lmtx.learn.select)."""

import numpy as np
import pandas as pd
import pytest

from lmtx.config import ConfigError, SelectConfig, TrainConfig
from lmtx.learn.fuse import estimate_quality, fuse
from lmtx.learn.select import decide, select_positives


def _views(n_docs=400, j=5, r=(0.8, 0.3, 0.5), seed=0):
    """Three views = r_i * relevance + independent noise, per candidate."""
    rng = np.random.default_rng(seed)
    doc = np.repeat(np.arange(n_docs), j)
    y = rng.random(n_docs * j) < 0.3
    yc = (y - y.mean()) / y.std()
    out = [ri * yc + np.sqrt(1 - ri**2) * rng.standard_normal(len(y)) for ri in r]
    return doc, y, out


def test_triad_estimate_recovers_view_quality_and_weights_the_better_view():
    doc, y, (t, s, l) = _views(r=(0.8, 0.3, 0.5))
    from lmtx.learn.fuse import _centered

    q = estimate_quality(_centered(t, doc), _centered(s, doc), _centered(l, doc))
    assert q.method == "triad"
    # centering per document shrinks the correlations a little; the order and rough size must hold
    assert q.r_teacher == pytest.approx(0.8, abs=0.12) and q.r_student == pytest.approx(0.3, abs=0.12)
    assert q.w_teacher > 0.75
    # the other way round: the student is the better view
    doc, y, (t, s, l) = _views(r=(0.3, 0.8, 0.5), seed=1)
    q = estimate_quality(_centered(t, doc), _centered(s, doc), _centered(l, doc))
    assert q.w_student > 0.75


def test_fuse_modes_and_fused_selection():
    # doc 0: the teacher barely prefers label 1, the student clearly prefers label 2 -> student wins under equal
    # weights; doc 1: the teacher is sure of label 3 -> the teacher wins
    j = pd.DataFrame(
        {
            "doc": [0, 0, 0, 1, 1, 1],
            "label": [1, 2, 0, 3, 4, 0],
            "p_yes": [0.52, 0.50, 0.10, 0.99, 0.30, 0.20],
            "similarity": [0.40, 0.60, 0.10, 0.40, 0.45, 0.30],
        }
    )
    texts = ["alpha beta", "gamma delta"]
    ltexts = ["zero", "alpha", "beta", "gamma", "delta"]
    f, _ = fuse(j, texts, ltexts, "equal")
    j["fused"], j["yes"] = f, [True, True, False, True, False, False]
    ex = select_positives(j, "fused")
    assert [e.choices for e in ex] == [[2], [3]]
    assert ex[0].yes == {1, 2} and ex[0].cands == (1, 2, 0) and sum(ex[0].target) == pytest.approx(1.0)
    f, _ = fuse(j, texts, ltexts, "teacher")
    assert f[0] > f[1]  # teacher only: label 1 ahead of label 2
    f, _ = fuse(j, texts, ltexts, "student")
    assert f[4] > f[3]  # student only: label 4 ahead of label 3
    # w:X weighs the two views X : 1 - X; w:0.5 is equal, w:1 the teacher alone, w:0 the student alone
    for mode, same in (("w:0.5", "equal"), ("w:1", "teacher"), ("w:0", "student")):
        np.testing.assert_allclose(fuse(j, texts, ltexts, mode)[0], fuse(j, texts, ltexts, same)[0])
    f, q = fuse(j, texts, ltexts, "w:0.8")
    assert (q.w_teacher, q.w_student) == pytest.approx((0.8, 0.2))
    np.testing.assert_allclose(
        f, 0.8 * fuse(j, texts, ltexts, "teacher")[0] + 0.2 * fuse(j, texts, ltexts, "student")[0]
    )
    for bad in ("w:1.5", "w:-0.1", "w:x", "w:nan"):
        with pytest.raises(ValueError, match="teacher's weight"):
            fuse(j, texts, ltexts, bad)
        with pytest.raises(ConfigError, match="select.fusion"):
            SelectConfig(fusion=bad)


def test_random_strategy_redraws_the_positive_among_yes_labels(tiny_encoder, monkeypatch):
    import lmtx.learn.train as T
    from lmtx.learn.select import Example
    from lmtx.search.encoder import load_encoder

    drawn = []
    real = T.InBatchTripletLoss

    class Spy(real):
        def forward(self, d, l, label_ids, yes_mask=None):
            drawn.append(label_ids.tolist())
            return super().forward(d, l, label_ids, yes_mask)

    monkeypatch.setattr(T, "InBatchTripletLoss", Spy)
    model = load_encoder(tiny_encoder, 64, "cpu", lambda s: None)
    docs, labels = [f"doc {i} audio" for i in range(4)], [f"label {i}" for i in range(8)]
    ex = [Example(i, [2 * i, 2 * i + 1], frozenset([2 * i, 2 * i + 1])) for i in range(4)]
    T.train_round(model, docs, labels, ex, TrainConfig(batch_size=4, epochs=12, warmup_steps=0, lr=1e-5), 0, False)
    firsts = {x for row in drawn for x in row}
    assert len(drawn) == 12 and firsts == set(range(8))  # every yes-label of every document was drawn at some step
    assert all(sorted(x // 2 for x in row) == [0, 1, 2, 3] for row in drawn)  # always one of the document's own


def test_decision_rules_and_selection():
    j = pd.DataFrame(
        {
            "doc": [0, 0, 0, 1, 1, 1],
            "label": [5, 6, 7, 5, 8, 9],
            "p_yes": [0.9, 0.88, 0.2, 0.3, 0.1, 0.05],
            "similarity": [0.1, 0.5, 0.9, 0.9, 0.2, 0.1],
        }
    )
    assert decide(j, "abs:0.5").tolist() == [True, True, False, False, False, False]
    assert decide(j, "rel:0.05").tolist() == [True, True, False, True, False, False]
    assert decide(j, "quantile:0.5").sum() == 3
    j["yes"] = decide(j, "abs:0.5")
    ex = select_positives(j, "similarity")
    assert len(ex) == 1 and ex[0].choices == [6] and ex[0].yes == {5, 6}  # doc 1 has no yes: sits out
    assert select_positives(j, "p_yes")[0].choices == [5]
    assert sorted(select_positives(j, "random")[0].choices) == [5, 6]
    assert len(select_positives(j, "all")) == 2


def test_zero_probability_is_never_yes():
    j = pd.DataFrame({"doc": [0, 0, 1], "label": [1, 2, 3], "p_yes": [0.0, 0.0, 1.0], "similarity": [0.5, 0.4, 0.3]})
    for rule in ("rel:0.05", "quantile:0.0", "abs:0.0"):
        assert decide(j, rule).tolist() == [False, False, True], rule
