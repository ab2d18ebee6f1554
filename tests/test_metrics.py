import math

import numpy as np
import pytest

from lmtx.evaluation.metrics import auc, propensities, ranking_metrics


def test_hand_computed_ranking_metrics():
    ranked = [["a", "b", "c"], ["x", "y", "z"]]
    gold = [{"b", "c"}, {"x"}]
    m = ranking_metrics(ranked, gold, ks=(1, 3), recall_ks=(1, 3))
    assert m["P@1"] == pytest.approx((0 + 1) / 2)
    assert m["P@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["R@1"] == pytest.approx((0 + 1) / 2)
    assert m["R@3"] == pytest.approx((1 + 1) / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["nDCG@3"] == pytest.approx((dcg / idcg + 1) / 2)
    assert m["n_docs"] == 2


def test_psp_weights_rare_labels():
    gold = [{"common"}] * 9 + [{"rare", "common"}]
    p = propensities(gold)
    assert p["rare"] < p["common"] <= 1
    hit_rare = ranking_metrics([["rare"]] + [["common"]] * 0, [{"rare", "common"}], ks=(1,), recall_ks=(1,), prop=p)
    hit_common = ranking_metrics([["common"]], [{"rare", "common"}], ks=(1,), recall_ks=(1,), prop=p)
    assert hit_rare["PSP@1"] == pytest.approx(1.0) and hit_common["PSP@1"] == pytest.approx(p["rare"] / p["common"])


def test_auc():
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert auc(np.array([0.5]), np.array([1])) is None


def test_evaluate_cli_baselines_and_run_folder(tmp_path, small_data, tiny_encoder):
    import json

    from typer.testing import CliRunner

    from lmtx.cli import app

    r = CliRunner()
    res = r.invoke(
        app,
        [
            "evaluate",
            "--baseline",
            "tfidf",
            "--docs",
            small_data["eval"],
            "--labels",
            small_data["labels"],
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_docs"] == 40 and 0 < m["P@1"] <= 1 and "PSP@5" in m
    res = r.invoke(
        app, ["evaluate", "--baseline", "bm25", "--docs", small_data["eval"], "--labels", small_data["labels"]]
    )
    assert res.exit_code == 0 and "P@1" in res.output
    res = r.invoke(
        app, ["evaluate", "--model", tiny_encoder, "--docs", small_data["eval"], "--labels", small_data["labels"]]
    )
    assert res.exit_code == 0 and "nDCG@5" in res.output
    res = r.invoke(app, ["evaluate", "--docs", small_data["eval"], "--labels", small_data["labels"]])
    assert res.exit_code == 2
