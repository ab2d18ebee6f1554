"""The never-worse guard (lmtx.loop.guard): held-out documents, decisions, refusals."""

import json

import numpy as np
import pytest
import torch
from conftest import sim_config as _cfg

from lmtx.config import ConfigError, LoopConfig, RunConfig
from lmtx.loop.job import guard_split
from lmtx.loop.run import Runtime, iterate


class InitialEncoderJudge:
    """A test teacher that says yes (0.9) exactly to the label the initial encoder ranks first for a document."""

    simulated, model_id = False, "judge"

    def __init__(self, enc, labels_path):
        from lmtx.search.encoder import embed, load_encoder
        from lmtx.store.data import load_labels

        self.m, self.embed = load_encoder(enc), embed
        labels = load_labels(labels_path)
        self.ids = [l.id for l in labels.labels]
        self.lemb = embed(self.m, [l.text() for l in labels.labels])

    def describe(self):
        return "initial-encoder judge (test)"

    def score(self, pairs):
        from lmtx.teacher.base import Judgment

        d = self.embed(self.m, [p.doc for p in pairs])
        top = [self.ids[int(i)] for i in (d @ self.lemb.T).argmax(1)]
        return [Judgment(0.9 if p.label_id == t else 0.1, 1.0) for p, t in zip(pairs, top)]


def test_guard_split_is_fixed_and_bounded():
    class D:
        def __init__(self, i):
            self.id = f"d{i}"

    docs = [D(i) for i in range(300)]
    cfg = RunConfig()
    tr, g = guard_split(docs, cfg)
    assert len(g) == 45 and len(tr) == 255 and not {d.id for d in tr} & {d.id for d in g}
    assert [d.id for d in guard_split(docs, cfg)[1]] == [d.id for d in g]  # fixed
    cfg.loop.guard_docs = 0
    assert guard_split(docs, cfg) == (docs, [])
    cfg.loop.guard_docs = 0.01  # raised to guard_min
    assert len(guard_split(docs, cfg)[1]) == 30


def test_guard_refuses_a_round_that_wrecks_the_encoder(tmp_path, small_data, tiny_encoder, monkeypatch):
    """A training step that scrambles the encoder's weights: the teacher rates its top-1 labels on the held-out
    documents lower than the initial encoder's, so the round is kept on disk but not promoted, and
    evaluate/tag use the initial encoder."""
    import lmtx.learn.train as T
    from lmtx.evaluation.evaluate import resolve_model

    def wreck(model, *a, **kw):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * p.std().clamp(min=1e-3))
        return {"steps": 1, "examples": 0, "loss_mean": 0.0, "wrecked": True}

    monkeypatch.setattr(T, "train_round", wreck)
    out = tmp_path / "run"
    cfg = _cfg(small_data, tiny_encoder, 1)
    logs = []
    rt = Runtime(progress=False, log=logs.append, teacher=InitialEncoderJudge(tiny_encoder, small_data["labels"]))
    res = list(iterate(cfg, out, rt))
    m = res[-1].metrics
    g = json.loads((out / "manifest.json").read_text())["guard"]
    assert g["1"] < g["0"], (g, m["train"])
    assert m["promoted"] is False and m["best_round"] == 0
    assert (out / "round-01" / "encoder" / "modules.json").exists()  # kept on disk
    assert resolve_model(str(out)) == tiny_encoder
    assert any("round 1 not promoted" in s for s in logs)
    assert m["best"]["round"] == 0 and m["best"]["P@1"] == res[0].metrics["P@1"]
    from lmtx.evaluation.report import make_report

    rep = make_report(out).read_text()
    assert "best round (what `evaluate`/`tag" in rep and "| 1 | False | 0 | " in rep and ": worse |" in rep


def test_guard_off_promotes_every_round(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "run"
    cfg = _cfg(small_data, tiny_encoder, 1, train={"lr": 5.0, "warmup_steps": 0}, loop={"guard_docs": 0})
    m = list(iterate(cfg, out, Runtime(progress=False, log=lambda s: None)))[-1].metrics
    assert m["promoted"] is True and m["guard"]["docs"] == 0 and m["docs"] == 40


def test_guard_decision_tolerates_noise_but_not_a_clear_drop():
    from lmtx.loop.guard import decision as _guard_decision

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, 45)
    ok, why = _guard_decision(0.50, 0.5, noise - noise.mean() - 0.005, 2, 1, 45)  # -0.005 with SE ~0.015
    assert ok and "not worse" in why
    ok, why = _guard_decision(0.40, 0.5, noise - noise.mean() - 0.1, 2, 1, 45)  # -0.1, about 7 SE
    assert not ok and why.endswith("worse") and "(round 1)" in why
    assert _guard_decision(0.6, 0.5, None, 2, 1, 45)[0] and not _guard_decision(0.4, 0.5, None, 2, 1, 45)[0]
    # 1.5 standard errors below: within the noise at the default z = 2 (the refusals measured at z = 1 were all
    # 1.1-1.5 SE, and five of six were better rounds on gold), refused at z = 1
    d = noise - noise.mean()
    d = d - 1.5 * d.std(ddof=1) / np.sqrt(len(d))
    assert _guard_decision(0.49, 0.5, d, 2, 1, 45)[0] and not _guard_decision(0.49, 0.5, d, 2, 1, 45, z=1.0)[0]


def test_guard_z_is_a_setting():
    from lmtx.config import RunConfig

    assert RunConfig().loop.guard_z == 2.0
    with pytest.raises(ConfigError, match="guard_z"):
        LoopConfig(guard_z=0)
