"""The teacher cascade (lmtx.loop.cascade): a strong teacher within its budget."""

import pandas as pd
from conftest import sim_config as _cfg

from lmtx.loop.run import Runtime, iterate
from lmtx.teacher.simulated import SimulatedTeacher


def test_cascade_spends_at_most_its_budget_on_disagreements(tmp_path, small_data, tiny_encoder):
    from lmtx.store.data import gold_of, load_docs

    gold = gold_of(load_docs(small_data["docs"]))
    weak, strong = SimulatedTeacher(gold, 0.4, seed=1), SimulatedTeacher(gold, 0.0, seed=2)
    cfg = _cfg(small_data, tiny_encoder, 2, teacher={"strong": "simulated:0", "strong_budget": 30})
    cfg.index.candidates = 3
    res = list(
        iterate(cfg, tmp_path / "run", Runtime(progress=False, log=lambda s: None, teacher=weak, strong_teacher=strong))
    )
    asked = [r.metrics["strong_pairs_asked"] for r in res[1:]]
    # later rounds' new candidates of documents already under the strong teacher count against the budget too
    assert 0 < sum(asked) <= 30 and asked[0] <= 15  # the budget is spread over the rounds
    j = pd.read_parquet(tmp_path / "run" / "round-02" / "judgments.parquet")
    s = j[j["p_strong"].notna()]
    # the strong teacher judged whole documents (all their pairs), and its answers feed the decision
    assert s.groupby("doc_id").size().eq(j[j["doc_id"].isin(s["doc_id"])].groupby("doc_id").size()).all()
    assert "strong_teacher_auc" in res[-1].metrics


def test_cascade_never_exceeds_a_tight_budget(tmp_path, small_data, tiny_encoder):
    from lmtx.store.data import gold_of, load_docs

    gold = gold_of(load_docs(small_data["docs"]))
    for budget in (7, 12):
        cfg = _cfg(
            small_data, tiny_encoder, 3, teacher={"strong": "simulated:0", "strong_budget": budget}, train={"lr": 0.05}
        )
        cfg.index.candidates = 3
        rt = Runtime(
            progress=False,
            log=lambda s: None,
            teacher=SimulatedTeacher(gold, 0.4, seed=1),
            strong_teacher=SimulatedTeacher(gold, 0.0, seed=2),
        )
        res = list(iterate(cfg, tmp_path / f"run{budget}", rt))
        assert sum(r.metrics["strong_pairs_asked"] for r in res[1:]) <= budget
