"""teacher.describe: the label's description in the prompt (yes), left out (no), or both forms averaged (both)."""

import json

import numpy as np
import pytest
from conftest import sim_config as _cfg

from lmtx.config import ConfigError, TeacherConfig
from lmtx.loop.run import Runtime, iterate
from lmtx.teacher.base import Judgment, Pair
from lmtx.teacher.cache import describe_forms
from lmtx.teacher.prompts import load_template


class FormJudge:
    """A test teacher that renders each prompt with the run's template and answers 0.8 when the rendered prompt shows
    a description, 0.2 when it does not; it records every prompt it was asked."""

    simulated, model_id = False, "form-judge"

    def __init__(self):
        self.template = None
        self.prompts, self.calls = [], []

    def describe(self):
        return "form judge (test)"

    def score(self, pairs):
        out, call = [], len(self.calls)
        self.calls.append(len(pairs))
        for p in pairs:
            text = self.template.render(p.doc, p.label, p.description)
            self.prompts.append(((call, p.doc_id), text))
            out.append(Judgment(0.8 if p.description and p.description in text else 0.2, 1.0))
        return out


def test_forms():
    full, bare = load_template("paper-desc"), load_template("paper")
    assert full.shows_description and not bare.shows_description
    pairs = [Pair("d", "text", "a", "Interpreter", "Software Development: Interpreter."), Pair("d", "text", "b", "B")]
    assert describe_forms(pairs, "yes", full) == [pairs]
    assert describe_forms(pairs, "both", bare) == [pairs]  # nothing to leave out
    (no,) = describe_forms(pairs, "no", full)
    assert no[0].description == "" and no[1] is pairs[1]  # a label without a description: the same pair
    assert "Software" not in full.render(no[0].doc, no[0].label, no[0].description)
    assert describe_forms(pairs, "both", full) == [pairs, no]
    with pytest.raises(ConfigError, match="teacher.describe must be one of yes, no, both"):
        TeacherConfig(describe="maybe")


@pytest.mark.parametrize("describe, p", [("yes", 0.8), ("no", 0.2), ("both", 0.5)])
def test_describe_in_a_run(tmp_path, small_data, tiny_encoder, describe, p):
    from lmtx.loop.job import template_of

    cfg = _cfg(small_data, tiny_encoder, 1, name="qwen0.5b", teacher={"describe": describe})
    judge = FormJudge()
    judge.template = template_of(cfg)
    res = list(iterate(cfg, tmp_path / "run", Runtime(progress=False, log=lambda s: None, teacher=judge)))
    import pandas as pd

    j = pd.read_parquet(tmp_path / "run" / "round-01" / "judgments.parquet")
    labels = {json.loads(line)["id"]: json.loads(line) for line in open(small_data["labels"])}
    has_desc = np.array([bool(labels[x].get("description")) for x in j["label_id"]])
    assert has_desc.all()
    assert np.allclose(j["p_yes"], p)
    m = res[1].metrics
    asked = m["prompts_asked"]
    # pairs and prompts counted apart: every judged pair was new (an empty cache); each distinct prompt asked once,
    # two labels of one name being one prompt without their descriptions
    assert m["pairs_asked"] == len(j) and m["pairs_total"] == len(j)
    forms = {"yes": [True], "no": [False], "both": [True, False]}[describe]
    names = {k: (v["name"], v["description"]) for k, v in labels.items()}
    distinct = {
        (d, names[x][0], names[x][1] if full else "") for d, x in zip(j["doc_id"], j["label_id"]) for full in forms
    }
    assert asked == len(distinct)
    guard = m["guard_prompts_asked"]
    assert 0 < m["guard_pairs_asked"] <= guard
    assert asked + guard == len(judge.prompts) == len({(d, t) for (_, d), t in judge.prompts})
    if describe == "both":  # within a call, each document's prompts come together (its prefix is run once)
        firsts = {}
        for i, (d, _) in enumerate(judge.prompts):
            firsts.setdefault(d, []).append(i)
        assert all(ix[-1] - ix[0] == len(ix) - 1 for ix in firsts.values())


def test_tag_verify_follows_the_run(tmp_path):
    """`lmtx tag --verify --model RUN` asks the teacher in the form the run was trained with."""
    from lmtx.cli import _run_describe

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"teacher": {}}))
    assert _run_describe(str(run)) == "yes"  # a run made before teacher.describe
    (run / "config.json").write_text(json.dumps({"teacher": {"describe": "no"}}))
    assert _run_describe(str(run)) == "no"
    assert _run_describe(str(tmp_path / "an-encoder")) == TeacherConfig.describe


def test_one_prompt_asked_once(tmp_path):
    """Pairs that render the same prompt (two labels of one name without their descriptions, two documents of one
    text) are asked once and share the answer, with or without a cache."""
    from lmtx.teacher.cache import AnswerCache, score_described

    judge = FormJudge()
    judge.template = load_template("paper-desc")
    pairs = [
        Pair("d1", "text one", "a", "Monitoring", "Admin: Monitoring."),
        Pair("d1", "text one", "b", "Monitoring", "Network: Monitoring."),
        Pair("d2", "text one", "a", "Monitoring", "Admin: Monitoring."),
    ]
    for cache in (None, AnswerCache(tmp_path / "c.sqlite")):
        judge.prompts.clear()
        p, mass, asked = score_described(judge, judge.template, pairs, cache, "both")
        assert asked.prompts == len(judge.prompts) == 3  # two with a description, one without
        assert asked.pairs == 3  # three pairs, none of them answered before
        assert np.allclose(p, 0.5) and np.allclose(mass, 1.0)
    judge.prompts.clear()
    assert score_described(judge, judge.template, pairs, AnswerCache(tmp_path / "c.sqlite"), "both").asked == (0, 0)


def test_the_strong_teachers_budget_counts_pairs_not_prompts(tmp_path, small_data, tiny_encoder):
    """Under teacher.describe both a strong teacher answers each pair in two prompts; --strong-budget counts pairs, as
    its help says: every pair the run reports as asked is one the strong teacher answered, in two prompts."""
    import pandas as pd

    from lmtx.loop.job import template_of
    from lmtx.store.data import gold_of, load_docs
    from lmtx.teacher.simulated import SimulatedTeacher

    gold = gold_of(load_docs(small_data["docs"]))
    cfg = _cfg(small_data, tiny_encoder, 2, teacher={"strong": "form-judge", "strong_budget": 40, "describe": "both"})
    cfg.index.candidates = 3
    strong = FormJudge()
    strong.template = template_of(cfg)
    rt = Runtime(progress=False, log=lambda s: None, teacher=SimulatedTeacher(gold, 0.4, seed=1), strong_teacher=strong)
    res = list(iterate(cfg, tmp_path / "run", rt))
    spent = sum(r.metrics["strong_pairs_asked"] for r in res[1:])
    judged = set()
    for r in (1, 2):
        j = pd.read_parquet(tmp_path / "run" / f"round-{r:02d}" / "judgments.parquet")
        judged |= set(zip(j.loc[j["p_strong"].notna(), "doc_id"], j.loc[j["p_strong"].notna(), "label_id"]))
    assert 0 < spent == len(judged) <= 40
    assert len(strong.prompts) == 2 * spent  # each pair in both forms (the sample's labels all have descriptions)
