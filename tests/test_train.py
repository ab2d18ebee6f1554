"""One round's training (lmtx.learn.train), alone and inside the loop: batches, optimizer state, merging,
checkpointing, interruption."""

import numpy as np
import pytest
import torch
from conftest import sim_config as _cfg

from lmtx.config import ConfigError, TrainConfig
from lmtx.loop.run import Runtime, iterate


def _checkpointing(hf) -> bool:
    """Whether activation checkpointing is on (transformers 5 renamed the property; the floor has the old name)."""
    return (
        hf.is_activation_checkpointing if hasattr(hf, "is_activation_checkpointing") else hf.is_gradient_checkpointing
    )


def _step(state: dict) -> int:
    return int(next(iter(state["state"].values()))["step"])


def _weights(path_or_model):
    from lmtx.search.encoder import load_encoder

    m = (
        load_encoder(str(path_or_model), 64, "cpu", lambda s: None)
        if not hasattr(path_or_model, "state_dict")
        else path_or_model
    )
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_small_rounds_shrink_the_batch_to_get_enough_steps():
    from lmtx.learn.train import effective_batch_size

    cfg = TrainConfig(min_steps=8)  # batch 128
    assert effective_batch_size(30000, cfg) == 128  # the paper's regime: untouched
    assert effective_batch_size(255, cfg) == 32 and effective_batch_size(120, cfg) == 16
    assert effective_batch_size(40, cfg) == 16  # never below 16 (15 in-batch negatives)
    assert effective_batch_size(120, TrainConfig()) == 128  # the default: off
    assert effective_batch_size(120, TrainConfig(batch_size=8, min_steps=8)) == 8


def test_optimizer_state_carries_from_round_to_round_and_across_a_resume(
    tmp_path, small_data, tiny_encoder, monkeypatch
):
    import lmtx.learn.train as T
    from lmtx.learn.train import train_round as real_train

    seen = []

    def spy(model, *a, opt_state=None, **kw):
        before = _step(opt_state["adamw"]) if opt_state and opt_state.get("adamw") else None
        log = real_train(model, *a, opt_state=opt_state, **kw)
        seen.append((before, _step(opt_state["adamw"])))
        return log

    monkeypatch.setattr(T, "train_round", spy)
    out = tmp_path / "run"
    list(
        iterate(
            _cfg(small_data, tiny_encoder, 2, loop={"guard_docs": 0}), out, Runtime(progress=False, log=lambda s: None)
        )
    )
    assert seen[0][0] is None and seen[0][1] >= 1  # round 1: a fresh AdamW
    assert seen[1][0] == seen[0][1]  # round 2 continues round 1's moments
    assert sorted(p.parent.name for p in out.glob("round-*/optimizer.pt")) == ["round-02"]  # only the best's
    saved_step = _step(torch.load(out / "round-02" / "optimizer.pt", weights_only=True))
    assert saved_step == seen[1][1]
    seen.clear()
    list(
        iterate(
            _cfg(small_data, tiny_encoder, 3, loop={"guard_docs": 0}), out, Runtime(progress=False, log=lambda s: None)
        )
    )
    assert len(seen) == 1 and seen[0][0] == saved_step  # the resumed run read round 2's state back
    assert sorted(p.parent.name for p in out.glob("round-*/optimizer.pt")) == ["round-03"]


def test_optimizer_state_off_starts_every_round_fresh(tmp_path, small_data, tiny_encoder, monkeypatch):
    import lmtx.learn.train as T

    calls = []
    monkeypatch.setattr(T, "train_round", lambda *a, opt_state=None, **kw: calls.append(opt_state) or {"steps": 0})
    list(
        iterate(
            _cfg(small_data, tiny_encoder, 2, train={"carry_optimizer": False}),
            tmp_path / "run",
            Runtime(progress=False, log=lambda s: None),
        )
    )
    assert calls == [None, None] and not list((tmp_path / "run").glob("round-*/optimizer.pt"))


def test_training_on_a_carried_state_leaves_the_callers_copy_unchanged(small_data, tiny_encoder):
    """A refused round must not alter the best round's moments that the next round starts from."""
    import copy

    from lmtx.config import TrainConfig
    from lmtx.learn.select import Example
    from lmtx.learn.train import train_round
    from lmtx.search.encoder import load_encoder

    model = load_encoder(tiny_encoder, 64, "cpu", lambda s: None)
    docs, labels = [f"doc {i} audio game" for i in range(8)], [f"label {i}" for i in range(4)]
    ex = [Example(i, [i % 4], frozenset([i % 4])) for i in range(8)]
    cfg = TrainConfig(batch_size=4, warmup_steps=0)
    state: dict = {}
    train_round(model, docs, labels, ex, cfg, 0, False, opt_state=state)
    old = state["adamw"]
    snap = copy.deepcopy(old)
    train_round(model, docs, labels, ex, cfg, 1, False, opt_state=state)
    assert state["adamw"] is not old and _step(state["adamw"]) == _step(snap) + 2
    for k, v in snap["state"].items():
        assert torch.equal(old["state"][k]["exp_avg"], v["exp_avg"]) and int(old["state"][k]["step"]) == int(v["step"])


def test_start_init_retrains_from_the_initial_encoder_each_round(tmp_path, small_data, tiny_encoder, monkeypatch):
    import lmtx.learn.train as T
    from lmtx.learn.train import train_round as real_train

    starts = []

    def spy(model, *a, **kw):
        starts.append(float(sum(p.detach().double().sum() for p in model.parameters())))
        return real_train(model, *a, **kw)

    monkeypatch.setattr(T, "train_round", spy)
    list(
        iterate(
            _cfg(small_data, tiny_encoder, 2, train={"start": "init", "lr": 0.01}, loop={"guard_docs": 0}),
            tmp_path / "a",
            Runtime(progress=False, log=lambda s: None),
        )
    )
    assert len(starts) == 2 and starts[1] == starts[0]  # round 2 began from the initial weights again
    starts.clear()
    list(
        iterate(
            _cfg(small_data, tiny_encoder, 2, train={"lr": 0.01}, loop={"guard_docs": 0}),
            tmp_path / "b",
            Runtime(progress=False, log=lambda s: None),
        )
    )
    assert starts[1] != starts[0]  # warm (default): round 2 began from round 1's encoder


def test_checkpointed_training_gives_the_same_weights(tiny_encoder):
    """train.checkpointing replays the forward pass (dropout masks included): the same update, less memory; auto
    leaves small label sets alone, and the model is left without checkpointing after training."""
    from lmtx.config import ConfigError, TrainConfig
    from lmtx.learn.select import Example
    from lmtx.learn.train import train_round
    from lmtx.search.encoder import load_encoder

    docs, labels = [f"doc {i} audio game" for i in range(8)], [f"label {i}" for i in range(4)]
    ex = [Example(i, [i % 4], frozenset([i % 4])) for i in range(8)]
    out = {}
    for mode in ("off", "on", "auto"):
        model = load_encoder(tiny_encoder, 64, "cpu", lambda s: None)
        log = train_round(
            model, docs, labels, ex, TrainConfig(batch_size=4, warmup_steps=0, checkpointing=mode), 0, False
        )
        assert log["checkpointing"] is (mode == "on")
        hf = model[0].auto_model
        assert not _checkpointing(hf)
        out[mode] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.equal(
        out["off"],
        torch.cat([p.detach().flatten() for p in load_encoder(tiny_encoder, 64, "cpu", lambda s: None).parameters()]),
    )
    torch.testing.assert_close(out["on"], out["off"], rtol=1e-5, atol=1e-6)
    assert torch.equal(out["auto"], out["off"])
    with pytest.raises(ConfigError, match="checkpointing"):
        TrainConfig(checkpointing="yes")


def test_merge_hands_out_the_mix_and_trains_on_from_the_unmerged_weights(
    tmp_path, small_data, tiny_encoder, monkeypatch
):
    """train.merge_init 0.5: round r's encoder (retrieval, guard, evaluate, tag) is the average of the initial
    weights and the trained ones; the next round trains on from the trained ones (round-NN/trained), also after
    a resume; only the best round keeps them."""
    import lmtx.learn.train as T
    from lmtx.evaluation.evaluate import resolve_model
    from lmtx.learn.train import train_round as real_train

    starts = []

    def spy(model, *a, **kw):
        starts.append(_weights(model))
        return real_train(model, *a, **kw)

    monkeypatch.setattr(T, "train_round", spy)
    out = tmp_path / "run"
    cfg = lambda n: _cfg(small_data, tiny_encoder, n, train={"lr": 0.01, "warmup_steps": 0}, loop={"guard_docs": 0})
    assert cfg(1).train.merge_init == 0.5  # the default
    res = list(iterate(cfg(2), out, Runtime(progress=False, log=lambda s: None)))
    init = _weights(tiny_encoder)
    r1 = _weights(out / "round-01" / "encoder")
    assert sorted(p.parent.name for p in out.glob("round-*/trained")) == ["round-02"]  # only the best keeps them
    t2 = _weights(out / "round-02" / "trained")
    r2 = _weights(out / "round-02" / "encoder")
    k = "0.auto_model.encoder.layer.0.attention.self.query.weight"
    k = k if k in init else next(n for n, v in init.items() if v.is_floating_point() and v.dim() == 2)
    for name, v in t2.items():
        if v.is_floating_point():
            assert torch.allclose(r2[name], 0.5 * init[name] + 0.5 * v, atol=1e-6), name
    assert not torch.allclose(t2[k], init[k]) and not torch.allclose(r2[k], t2[k])
    # round 2 trained on from round 1's unmerged weights, not from its handed-out merge
    t1 = {n: 2 * r1[n] - init[n] for n in r1 if r1[n].is_floating_point()}
    assert torch.allclose(starts[1][k], t1[k], atol=1e-5) and not torch.allclose(starts[1][k], r1[k])
    assert resolve_model(str(out)) == str(out / "round-02" / "encoder")
    m = res[-1].metrics
    assert m["merge_init"] == 0.5 and 0 <= m["unmerged"]["P@1"] <= 1
    # a resumed run trains round 3 from round 2's unmerged weights read back from disk
    starts.clear()
    list(iterate(cfg(3), out, Runtime(progress=False, log=lambda s: None)))
    assert len(starts) == 1 and torch.allclose(starts[0][k], t2[k])
    assert sorted(p.parent.name for p in out.glob("round-*/trained")) == ["round-03"]


def test_merge_off_trains_the_handed_out_encoder(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "run"
    res = list(
        iterate(
            _cfg(small_data, tiny_encoder, 1, train={"merge_init": 0.0}, loop={"guard_docs": 0}),
            out,
            Runtime(progress=False, log=lambda s: None),
        )
    )
    assert not list(out.glob("round-*/trained")) and "unmerged" not in res[-1].metrics
    with pytest.raises(ConfigError, match="merge_init"):
        TrainConfig(merge_init=1.0)


def test_interrupted_training_leaves_the_model_as_it_found_it(tiny_encoder, monkeypatch):
    """Ctrl-C during a step: the model is back in eval mode, with its max length and without checkpointing."""
    import lmtx.store.drill as D
    from lmtx.config import TrainConfig
    from lmtx.learn.select import Example
    from lmtx.learn.train import train_round
    from lmtx.search.encoder import load_encoder

    model = load_encoder(tiny_encoder, 48, "cpu", lambda s: None)
    hf = model[0].auto_model

    def boom(name):
        assert model.training and _checkpointing(hf) and model.max_seq_length != 48
        raise KeyboardInterrupt

    monkeypatch.setattr(D, "point", boom)
    docs, labels = [f"doc {i} audio game" for i in range(8)], [f"label {i}" for i in range(4)]
    ex = [Example(i, [i % 4], frozenset([i % 4])) for i in range(8)]
    with pytest.raises(KeyboardInterrupt):
        train_round(model, docs, labels, ex, TrainConfig(batch_size=4, checkpointing="on"), 0, False)
    assert not model.training and not _checkpointing(hf) and model.max_seq_length == 48


def test_distill_and_ohnm_run_in_the_loop(tmp_path, small_data, tiny_encoder):
    cfg = _cfg(small_data, tiny_encoder, 1, train={"distill": 1.0, "loss": "ohnm"})
    m = list(iterate(cfg, tmp_path / "run", Runtime(progress=False, log=lambda s: None)))[-1].metrics
    assert m["train"]["steps"] > 0 and np.isfinite(m["train"]["loss_mean"])


def test_hard_negatives_add_the_rejected_candidates_and_never_the_positive_or_a_yes(tiny_encoder, monkeypatch):
    """train.hard_negatives: each document's candidates the teacher said no to join the label columns of the
    batch's loss; its positive and its yes-labels are never its negatives."""
    import lmtx.learn.losses as L
    from lmtx.learn.select import Example
    from lmtx.learn.train import train_round
    from lmtx.search.encoder import load_encoder

    seen = []
    real = L.InBatchTripletLoss.scored

    def spy(self, d, labels, pos_col, valid):
        seen.append((labels.shape[0], pos_col.tolist(), valid.clone()))
        return real(self, d, labels, pos_col, valid)

    monkeypatch.setattr(L.InBatchTripletLoss, "scored", spy)
    docs = [f"document about topic {i}" for i in range(4)]
    labels = [f"label {i}" for i in range(10)]
    ex = [
        Example(0, [0], frozenset({0, 5}), cands=(0, 5, 6, 7)),  # 5: a yes (masked), 6 and 7: rejected
        Example(1, [1], frozenset({1}), cands=(1, 8, 5)),  # 5 rejected here, a yes of document 0
        Example(2, [2], frozenset({2}), cands=(2, 6)),  # 6 rejected here too: one column
        Example(3, [3], frozenset({3}), cands=()),
    ]
    m = load_encoder(str(tiny_encoder), 64, "cpu", lambda s: None)
    log = train_round(m, docs, labels, ex, TrainConfig(batch_size=4, hard_negatives=True), progress=False)
    assert log["steps"] == 1 and len(seen) == 1
    n, pos_col, valid = seen[0]
    cols = [0, 1, 2, 3, 5, 6, 7, 8]  # every positive and every rejected candidate
    assert n == len(cols)
    assert sorted(cols[c] for c in pos_col) == [0, 1, 2, 3]  # each row's positive (rows in the shuffled order)
    for row, c in enumerate(pos_col):
        assert not valid[row, c]  # never its own positive
    doc0 = pos_col.index(cols.index(0))
    assert not valid[doc0, cols.index(5)]  # document 0's yes-label is not its negative, though 1 rejected it
    assert valid.sum().item() == 4 * (len(cols) - 1) - 1  # every other column is a negative
    plain = load_encoder(str(tiny_encoder), 64, "cpu", lambda s: None)
    seen.clear()
    train_round(plain, docs, labels, ex, TrainConfig(batch_size=4, hard_negatives=False), progress=False)
    assert not seen  # off: the in-batch loss alone
