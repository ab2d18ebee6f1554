"""Lexical index and hybrid ranking, against bm25s itself and a naive per-document loop."""

import json

import numpy as np
import pytest
from conftest import sim_config as _cfg
from typer.testing import CliRunner

from lmtx.search.hybrid import build_pools, choose_weight
from lmtx.search.index import exact_topk
from lmtx.search.lexical import LexicalIndex, lexical_index
from lmtx.store.data import Label, LabelSet, load_docs, load_labels

LABELS = [
    "python library for audio files",
    "a game of strategy and puzzle",
    "text editor for the terminal",
    "web server and client",
    "database tool for science data",
    "font files",
    "the music player",
    "shell debug tool",
    "kernel driver for network hardware",
    "image and video editor",
]
DOCS = [
    "an audio library written in python",
    "play a puzzle game",
    "edit text files in a terminal editor",
    "no shared words here zzz",
    "music player with audio plugin support",
    "debug the kernel driver",
]


def test_lexical_topk_is_bm25s_ranking_and_pair_scores_agree():
    import bm25s

    lex = LexicalIndex.build(LABELS)
    idx, sc = lex.topk(DOCS, 4)
    r = bm25s.BM25()
    r.index(bm25s.tokenize(LABELS, stopwords="en", show_progress=False), show_progress=False)
    for i, d in enumerate(DOCS):
        toks = bm25s.tokenize([d], stopwords="en", return_ids=False, show_progress=False)[0]
        full = r.get_scores(toks) if any(t in r.vocab_dict for t in toks) else np.zeros(len(LABELS))
        order = np.lexsort((np.arange(len(LABELS)), -full))[:4]
        assert list(idx[i]) == list(order)
        np.testing.assert_allclose(sc[i], full[order], rtol=1e-5)
        # every (doc, label) pair from the sparse matrix equals bm25s's own score
        got = lex.pair_scores(DOCS, np.full(len(LABELS), i), np.arange(len(LABELS)))
        np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)
    assert sc[3].max() == 0.0  # no shared word: zero everywhere


def _pools(standardize="labels"):
    rng = np.random.default_rng(0)
    lemb = rng.normal(size=(len(LABELS), 8)).astype(np.float32)
    lemb /= np.linalg.norm(lemb, axis=1, keepdims=True)
    demb = rng.normal(size=(len(DOCS), 8)).astype(np.float32)
    demb /= np.linalg.norm(demb, axis=1, keepdims=True)
    lex = LexicalIndex.build(LABELS)
    pool = 4
    d_idx, d_sim = exact_topk(demb, lemb, pool)
    l_idx, l_sc = lex.topk(DOCS, pool)
    pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lex, DOCS, standardize)
    return pools, demb, lemb, lex, d_idx, d_sim, l_idx, l_sc


@pytest.mark.parametrize("standardize", ["labels", "pool"])
def test_hybrid_against_a_naive_loop(standardize):
    """labels: each side's mean and sd over every label (the dense side's from the label moments, not a full
    pass); pool: over each side's own top-pool."""
    pools, demb, lemb, lex, d_idx, d_sim, l_idx, l_sc = _pools(standardize)
    w = 0.6
    idx, score = pools.rank(w, 3)
    for i in range(len(DOCS)):
        cand = sorted(set(d_idx[i]) | set(l_idx[i]))
        cos = {l: float(demb[i] @ lemb[l]) for l in cand}
        bm = {l: float(lex.pair_scores(DOCS, [i], [l])[0]) for l in cand}
        if standardize == "pool":
            mu_d, sd_d = np.mean(d_sim[i]), np.std(d_sim[i])
            mu_l, sd_l = np.mean(l_sc[i]), np.std(l_sc[i])
        else:
            every_cos = [float(demb[i] @ lemb[l]) for l in range(len(LABELS))]
            every_bm = lex.pair_scores(DOCS, np.full(len(LABELS), i), np.arange(len(LABELS)))
            mu_d, sd_d = np.mean(every_cos), np.std(every_cos)
            mu_l, sd_l = np.mean(every_bm), np.std(every_bm)
        f = {l: w * (cos[l] - mu_d) / sd_d + (1 - w) * ((bm[l] - mu_l) / sd_l if sd_l > 1e-9 else 0.0) for l in cand}
        want = sorted(cand, key=lambda l: (-f[l], l))[:3]
        assert list(idx[i]) == want, i
        np.testing.assert_allclose(score[i], [f[l] for l in want], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("standardize", ["labels", "pool"])
def test_weight_one_is_dense_and_zero_is_lexical(standardize):
    pools, demb, lemb, lex, d_idx, d_sim, l_idx, l_sc = _pools(standardize)
    idx, sc = pools.rank(1.0, 4)
    assert (idx == d_idx).all()
    np.testing.assert_allclose(sc, d_sim, rtol=1e-5)
    idx, sc = pools.rank(0.0, 4)
    assert (idx == l_idx).all()
    np.testing.assert_allclose(sc, l_sc, rtol=1e-5)


def test_choose_weight_keeps_the_prior_unless_clearly_beaten():
    flat = np.full(30, 0.5)
    # a noise-sized lead (the sample's round 3: 0.5153 vs 0.5149) does not move the prior
    noisy = flat + np.r_[0.01, -0.005, np.zeros(28)]
    assert choose_weight({0.8: flat, 0.5: noisy, 1.0: flat}, prior=0.8)[0] == 0.8
    # a lead of about 1.5 standard errors (debtags' round 3: 0.5086 vs 0.5054 on 45 documents) moved it at one
    # standard error and cost P@1; six weights compared, the default bar is 2.5
    lead = flat + np.r_[np.full(15, 0.014), np.full(15, -0.008)]
    assert choose_weight({0.9: flat, 0.65: lead}, prior=0.9, z=1.0)[0] == 0.65
    assert choose_weight({0.9: flat, 0.65: lead}, prior=0.9)[0] == 0.9
    # a clear, consistent gain does, dense only included; of two, the larger gain wins
    assert choose_weight({0.8: flat, 1.0: flat + 0.05, 0.5: flat + 0.02}, prior=0.8)[0] == 1.0
    w, means = choose_weight({0.8: flat, 0.0: flat + np.linspace(0.0, 0.2, 30)}, prior=0.8)
    assert w == 0.0 and means[0.0] == pytest.approx(0.6)
    assert choose_weight({}, prior=0.8)[0] == 0.8


def test_lexical_index_cached_by_label_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTX_HOME", str(tmp_path))
    labels = LabelSet([Label(f"l{i}", f"L{i}", t) for i, t in enumerate(LABELS)])
    a = lexical_index(labels, "description")
    built = list((tmp_path / "lexical").iterdir())
    assert len(built) == 1 and not any(p.name.startswith(".") or ".tmp" in p.name for p in built)
    b = lexical_index(labels, "description")  # loaded from disk
    assert isinstance(b, LexicalIndex) and b is not a
    for x, y in zip(a.topk(DOCS, 5), b.topk(DOCS, 5)):
        np.testing.assert_array_equal(x, y)
    lexical_index(labels, "name")  # other label text: another index
    assert len(list((tmp_path / "lexical").iterdir())) == 2


def test_name_plus_description_says_the_name_once():
    assert Label("a", "Audio", "Audio: sound tools").text("name+description") == "Audio: sound tools"
    assert Label("a", "ocr", "Text recognition").text("name+description") == "ocr: Text recognition"
    assert Label("a", "ocr", "").text("name+description") == "ocr"


def test_run_records_its_retrieval_and_tag_evaluate_reuse_it(tmp_path, small_data, tiny_encoder):
    """A run's metrics hold dense, lexical and the chosen ranking side by side; `lmtx evaluate --model RUN` ranks
    as the run chose and reproduces its final P@1; `lmtx tag` writes the same top labels. With the hubness penalty
    on (retrieval.hubness), so that its saved r(l) is checked too."""
    from lmtx.cli import app
    from lmtx.config import EncoderConfig, LoopConfig, RetrievalConfig, RunConfig, TeacherConfig, TrainConfig
    from lmtx.evaluation.evaluate import evaluate, resolve_retrieval
    from lmtx.loop.run import Runtime, iterate

    cfg = RunConfig(
        encoder=EncoderConfig(model=tiny_encoder),
        retrieval=RetrievalConfig(hubness=0.5, taught="shrink"),
        teacher=TeacherConfig(name="simulated:0.1"),
        train=TrainConfig(batch_size=8),
        loop=LoopConfig(rounds=1, docs=small_data["docs"], labels=small_data["labels"], eval_docs=small_data["eval"]),
    )
    out = tmp_path / "run"
    res = list(iterate(cfg, out, Runtime(progress=False, log=lambda s: None)))
    m1 = res[-1].metrics
    ret = m1["retrieval"]
    assert set(ret) >= {"dense", "lexical", "final", "P@1_by_weight", "best_weight_on_gold"}
    assert ret["dense"]["P@1"] == m1["P@1"] and ret["P@1_by_weight"]["1"] == pytest.approx(m1["P@1"], abs=1e-4)
    assert ret["P@1_by_weight"]["0"] == pytest.approx(ret["lexical"]["P@1"], abs=1e-4)
    assert set(ret["R@10_by_weight"]) == set(ret["P@1_by_weight"])
    assert ret["R@10_by_weight"]["1"] == pytest.approx(m1["R@10"], abs=1e-4)
    assert ret["R@10_by_weight"]["0"] == pytest.approx(ret["lexical"]["R@10"], abs=1e-4)
    choice = m1["retrieval_choice"]
    assert choice["mode"] in ("dense", "hybrid", "lexical") and set(choice["label_free"]) >= {"1", "0", "0.5"}
    man = json.loads((out / "manifest.json").read_text())
    assert man["retrieval"]["round"] == man["best_round"] and "0" in man["retrieval_choice"]
    labels = load_labels(small_data["labels"])
    ev = load_docs(small_data["eval"], labels)
    m = evaluate(str(out), ev, labels)
    best = json.loads((out / f"round-{man['best_round']:02d}" / "metrics.json").read_text())
    want = best.get("retrieval", {}).get("final") or {"mode": "dense", "P@1": best["P@1"]}
    assert m["retrieval"] == man["retrieval"]["mode"] == want["mode"]
    assert m["P@1"] == pytest.approx(want["P@1"], abs=1e-9)
    # retrieval.hubness: each round keeps its r(l), so the run's ranking needs no training documents
    assert man["retrieval"]["hubness"] > 0
    assert all(len(list((out / f"round-{r:02d}").glob("hubness-*.npy"))) == 1 for r in (0, 1))
    from lmtx.evaluation.evaluate import run_penalty

    how = resolve_retrieval(str(out))
    lemb_any = np.zeros((len(labels), 4), np.float32)
    saved = run_penalty(how, None, labels, lemb_any)  # read from the file: no encoder, no documents needed
    assert saved is not None and saved.shape == (len(labels),) and saved.max() > 0
    # each mode on request; lexical equals the round's lexical P@1 (same eval docs: no sampling here)
    lex = evaluate(str(out), ev, labels, retrieval="lexical")
    assert lex["P@1"] == pytest.approx(ret["lexical"]["P@1"], abs=1e-9)
    # retrieval.taught shrink: the run's hybrid weighs the words less for the labels it taught; without its
    # taught.json it is the plain fixed-weight hybrid of P@1_by_weight
    assert man["retrieval"]["taught"] == "shrink"
    taught = out / f"round-{man['best_round']:02d}" / "taught.json"
    if man["best_round"] > 0:
        assert resolve_retrieval(str(out), "hybrid", 0.5)["taught"] == str(taught) and taught.exists()
    hid = taught.with_name("taught.json.hidden")
    if taught.exists():
        taught.rename(hid)
    try:
        hyb = evaluate(str(out), ev, labels, retrieval="hybrid", dense_weight=0.5)
    finally:
        if hid.exists():
            hid.rename(taught)
    assert hyb["P@1"] == pytest.approx(ret["P@1_by_weight"]["0.5"], abs=1e-4)
    from lmtx.config import RetrievalConfig

    rc = RetrievalConfig()
    assert evaluate(str(out), ev, labels, retrieval="hybrid")["dense_weight"] in (
        rc.dense_weight,
        choice["dense_weight"],
    )
    # the label-free choice starts from the prior of the encoder's state: as fetched (round 0) or trained (round 1)
    assert f"{rc.zero_shot_weight:g}" in man["retrieval_choice"]["0"]["label_free"]
    assert f"{rc.dense_weight:g}" in choice["label_free"]
    assert m1["candidate_weight"] == rc.candidate_weight  # the teacher's candidates: fused at this weight
    # an encoder lmtx has not trained ranks hybrid at the zero-shot weight
    assert evaluate(tiny_encoder, ev, labels, retrieval="hybrid")["dense_weight"] == rc.zero_shot_weight
    # tag through the CLI: the same top-1 as evaluate's ranking of the run
    from lmtx.evaluation.evaluate import rank_with_encoder

    tagged = tmp_path / "tags.jsonl"
    r = CliRunner().invoke(
        app,
        [
            "tag",
            "--model",
            str(out),
            "--labels",
            small_data["labels"],
            "--docs",
            small_data["eval"],
            "--out",
            str(tagged),
            "--top-k",
            "3",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in tagged.read_text().splitlines()]
    top1 = {x["doc_id"]: x["label_id"] for x in rows if x["rank"] == 1}
    ranked, how = rank_with_encoder(str(out), ev, labels, 1)
    assert top1 == {d.id: r[0] for d, r in zip(ev, ranked)}
    assert f"by {how['mode']}" in r.output or "by hybrid" in r.output
    # the report shows the three rankings per round and plots them
    from lmtx.evaluation.report import make_report

    rep = make_report(out).read_text()
    assert "## Retrieval: dense, lexical (BM25) and the run's choice" in rep and (out / "report_retrieval.png").exists()
    # last, as it removes the saved r(l): without it, r(l) is recomputed from the run's training documents, and
    # without those there is no penalty
    from lmtx.search.encoder import load_encoder

    for f in (out / f"round-{man['best_round']:02d}").glob("hubness-*.npy"):
        f.unlink()
    enc = load_encoder(tiny_encoder)
    lemb = enc.encode([lab.text(how["label_text"]) for lab in labels.labels], normalize_embeddings=True)
    again = run_penalty(how, enc, labels, lemb)
    assert again is not None and again.shape == (len(labels),) and again.max() > 0
    said = []
    assert (
        run_penalty({**how, "hubness_docs": str(tmp_path / "gone.jsonl")}, enc, labels, lemb, log=said.append) is None
    )
    assert said and "no penalty" in said[0]


def test_bad_retrieval_options(small_data):
    from lmtx.cli import app

    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--baseline",
            "bm25",
            "--docs",
            small_data["eval"],
            "--labels",
            small_data["labels"],
            "--label-text",
            "names",
        ],
    )
    assert r.exit_code == 2 and "--label-text" in r.output
    from lmtx.config import ConfigError, RetrievalConfig

    with pytest.raises(ConfigError, match="retrieval.mode"):
        RetrievalConfig(mode="bm25")
    with pytest.raises(ConfigError, match="candidate_weight"):
        RetrievalConfig(candidate_weight=1.5)
    for bad in ({"hubness": -0.1}, {"candidate_hubness": 3.0}, {"hubness_k": 0}):
        with pytest.raises(ConfigError, match="hubness"):
            RetrievalConfig(**bad)


def test_candidates_can_follow_the_ranking_weight(tmp_path, small_data, tiny_encoder):
    """retrieval.candidate_weight None: the candidates are ranked at the weight the run ranks its best encoder with
    (round 1: the encoder as fetched, at its label-free choice)."""
    from lmtx.config import EncoderConfig, LoopConfig, RetrievalConfig, RunConfig, TeacherConfig, TrainConfig
    from lmtx.loop.run import Runtime, iterate

    cfg = RunConfig(
        encoder=EncoderConfig(model=tiny_encoder),
        retrieval=RetrievalConfig(candidate_weight=None),
        teacher=TeacherConfig(name="simulated:0.1"),
        train=TrainConfig(batch_size=8),
        loop=LoopConfig(rounds=1, docs=small_data["docs"], labels=small_data["labels"]),
    )
    out = tmp_path / "run"
    m1 = list(iterate(cfg, out, Runtime(progress=False, log=lambda s: None)))[-1].metrics
    man = json.loads((out / "manifest.json").read_text())
    assert m1["candidate_weight"] == man["retrieval_choice"]["0"]["dense_weight"]


def test_standardize_recorded_and_legacy_runs_keep_the_pool(tmp_path):
    """A run folder records how it standardized; one written before the setting existed ranks as it did then."""
    from lmtx.config import RunConfig
    from lmtx.evaluation.evaluate import resolve_retrieval
    from lmtx.loop.run import run_retrieval

    rec = run_retrieval(RunConfig(), 2, 0.9)
    assert rec["standardize"] == "labels" and rec["mode"] == "hybrid"
    for name, stored, want in (
        ("new", rec, "labels"),
        ("old", {k: v for k, v in rec.items() if k != "standardize"}, "pool"),
    ):
        run = tmp_path / name
        run.mkdir()
        (run / "manifest.json").write_text(json.dumps({"retrieval": stored}))
        (run / "config.json").write_text("{}")
        how = resolve_retrieval(str(run))
        assert (how["mode"], how["dense_weight"], how["standardize"]) == ("hybrid", 0.9, want)
    assert resolve_retrieval(None, "hybrid")["standardize"] == "labels"  # a plain encoder: the default


def test_label_moments_give_each_documents_cosine_mean_and_sd():
    from lmtx.search.hybrid import dense_stats, label_moments

    rng = np.random.default_rng(1)
    lemb = rng.normal(size=(1000, 16)).astype(np.float32)
    demb = rng.normal(size=(7, 16)).astype(np.float32)
    mu, sd = dense_stats(demb, label_moments(lemb, chunk=300))  # chunks that do not divide the rows
    full = demb.astype(np.float64) @ lemb.T.astype(np.float64)
    np.testing.assert_allclose(mu, full.mean(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sd, full.std(axis=1), rtol=1e-7)


def test_label_hubness_is_the_mean_of_each_labels_nearest_documents():
    from lmtx.search.hybrid import label_hubness

    rng = np.random.default_rng(2)
    lemb = rng.normal(size=(50, 8)).astype(np.float32)
    temb = rng.normal(size=(12, 8)).astype(np.float32)
    r = label_hubness(lemb, temb, 3, chunk=7)  # chunks that do not divide the rows
    full = lemb @ temb.T
    np.testing.assert_allclose(r, np.sort(full, axis=1)[:, -3:].mean(axis=1), rtol=1e-5)
    assert label_hubness(lemb, temb[:2], 10).shape == (50,)  # k above the documents: all of them
    assert (label_hubness(lemb, temb[:0], 10) == 0).all()


@pytest.mark.parametrize("standardize", ["labels", "pool"])
def test_hubness_penalty_against_a_naive_loop(standardize):
    """The dense side is cos - penalty: pooled scores, the every-label mean and sd (from the moments with the
    penalty's extra dimension) and the dense-only ranking all follow it."""
    from lmtx.search.hybrid import dense_stats, label_moments, penalized_topk

    _, demb, lemb, lex, d_idx, d_sim, l_idx, l_sc = _pools(standardize)
    pen = np.linspace(0.0, 0.4, len(LABELS)).astype(np.float32)
    pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lex, DOCS, standardize, penalty=pen)
    every = demb.astype(np.float64) @ lemb.T.astype(np.float64) - pen
    if standardize == "labels":
        mu, sd = dense_stats(demb, label_moments(lemb, chunk=3, penalty=pen))
        np.testing.assert_allclose(mu, every.mean(axis=1), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sd, every.std(axis=1), rtol=1e-6)
    w = 0.6
    idx, score = pools.rank(w, 3)
    for i in range(len(DOCS)):
        cand = sorted(set(d_idx[i]) | set(l_idx[i]))
        if standardize == "pool":
            mu_d, sd_d = np.mean(d_sim[i] - pen[d_idx[i]]), np.std(d_sim[i] - pen[d_idx[i]])
            mu_l, sd_l = np.mean(l_sc[i]), np.std(l_sc[i])
        else:
            every_bm = lex.pair_scores(DOCS, np.full(len(LABELS), i), np.arange(len(LABELS)))
            mu_d, sd_d, mu_l, sd_l = every[i].mean(), every[i].std(), np.mean(every_bm), np.std(every_bm)
        bm = {l: float(lex.pair_scores(DOCS, [i], [l])[0]) for l in cand}
        f = {
            l: w * (every[i, l] - mu_d) / sd_d + (1 - w) * ((bm[l] - mu_l) / sd_l if sd_l > 1e-9 else 0.0) for l in cand
        }
        want = sorted(cand, key=lambda l: (-f[l], l))[:3]
        assert list(idx[i]) == want, i
        np.testing.assert_allclose(score[i], [f[l] for l in want], rtol=1e-5, atol=1e-6)
    # dense only: the pooled labels by cos - penalty
    top, sc = pools.rank(1.0, 2)
    want_idx, want_sc = penalized_topk(d_idx, d_sim, pen, 2)
    for i in range(len(DOCS)):
        pooled = sorted(set(d_idx[i]) | set(l_idx[i]), key=lambda l: (-every[i, l], l))[:2]
        assert list(top[i]) == pooled
    full_idx, _ = exact_topk(demb, lemb, len(LABELS))
    got, _ = penalized_topk(full_idx, np.take_along_axis(demb @ lemb.T, full_idx, 1), pen, 3)
    assert (got == np.argsort(-every, axis=1, kind="stable")[:, :3]).all()
    assert want_idx.shape == (len(DOCS), 2) and np.isfinite(want_sc).all()


def test_hubness_demotes_a_label_near_every_document(monkeypatch):
    """A hub -- a label close to every document -- takes first place from the right label on cosine alone; the
    penalty from the documents' own embeddings (no gold) gives it back."""
    from lmtx.search.hybrid import Ranker, label_hubness
    from lmtx.search.index import LabelIndex

    rng = np.random.default_rng(3)
    topics = rng.normal(size=(20, 16)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    docs = topics + 0.9 * rng.normal(size=topics.shape).astype(np.float32) / 4
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    hub = docs.mean(axis=0)
    hub /= np.linalg.norm(hub)
    lemb = np.vstack([topics, hub[None]]).astype(np.float32)  # label 20: the hub

    class Fixed:  # an "encoder" that returns the fixed document vectors
        def encode(self, texts, **kw):
            return docs[[int(t) for t in texts]]

    texts = [str(i) for i in range(len(docs))]
    monkeypatch.setattr("lmtx.search.encoder.embed", lambda model, t, *a, **k: model.encode(t))
    plain = Ranker(Fixed(), LabelIndex(lemb), None, "dense", pool=21).rank(texts, 1)[0][:, 0]
    pen = 0.5 * label_hubness(lemb, docs, 10)
    fixed = Ranker(Fixed(), LabelIndex(lemb), None, "dense", pool=21, penalty=pen).rank(texts, 1)[0][:, 0]
    truth = np.arange(len(docs))
    assert (fixed == truth).mean() > (plain == truth).mean()
    assert (plain == 20).sum() > (fixed == 20).sum()


def test_hubness_recorded_and_legacy_runs_rank_without_it(tmp_path):
    from lmtx.config import RetrievalConfig, RunConfig, keep_legacy
    from lmtx.evaluation.evaluate import resolve_retrieval
    from lmtx.loop.run import run_retrieval

    assert run_retrieval(RunConfig(), 2, 0.9)["hubness"] == RunConfig().retrieval.hubness == 0.0  # off by default
    rec = run_retrieval(RunConfig(retrieval=RetrievalConfig(hubness=0.5)), 2, 0.9)
    assert rec["hubness"] == 0.5
    for name, stored, want in (
        ("new", rec, rec["hubness"]),
        ("old", {k: v for k, v in rec.items() if k not in ("hubness", "hubness_k")}, 0.0),
    ):
        run = tmp_path / name
        run.mkdir()
        (run / "manifest.json").write_text(json.dumps({"retrieval": stored}))
        (run / "config.json").write_text("{}")
        how = resolve_retrieval(str(run))
        assert how["hubness"] == want
        assert resolve_retrieval(str(run), "lexical")["hubness"] == 0.0  # BM25 alone: no dense side
    assert resolve_retrieval(None, "hybrid")["hubness"] == 0.0  # a plain encoder: none
    # a run made before the setting resumes without it
    assert keep_legacy(RunConfig(), {"retrieval": {}}).retrieval.hubness == 0.0


def test_candidate_hubness_changes_the_candidates_only(tmp_path, small_data, tiny_encoder):
    """retrieval.candidate_hubness: the teacher's candidates are ranked with the penalty, the run's own ranking (what
    it records and hands out) without; a strong penalty moves some candidates."""
    import pandas as pd

    from lmtx.config import EncoderConfig, LoopConfig, RetrievalConfig, RunConfig, TeacherConfig, TrainConfig
    from lmtx.loop.run import Runtime, iterate

    def run(name, **ret):
        cfg = RunConfig(
            encoder=EncoderConfig(model=tiny_encoder),
            retrieval=RetrievalConfig(**ret),
            teacher=TeacherConfig(name="simulated:0.1"),
            train=TrainConfig(batch_size=8),
            loop=LoopConfig(rounds=1, docs=small_data["docs"], labels=small_data["labels"]),
        )
        list(iterate(cfg, tmp_path / name, Runtime(progress=False, log=lambda s: None)))
        man = json.loads((tmp_path / name / "manifest.json").read_text())
        return pd.read_parquet(tmp_path / name / "round-01" / "candidates.parquet"), man["retrieval"]

    plain, rec0 = run("plain")
    cand, rec = run("cand", candidate_hubness=2.0)
    assert rec["hubness"] == rec0["hubness"] == 0.0  # the run ranks without it
    assert not list((tmp_path / "cand" / "round-01").glob("hubness-*.npy"))
    a, b = (set(zip(c["doc_id"], c["label_id"])) for c in (plain, cand))
    assert a != b and len(a) == len(b)


def test_taught_shrink_weighs_the_words_less_for_taught_labels(tmp_path, small_data, tiny_encoder):
    """retrieval.taught shrink: a label confirmed on c training documents ranks at dense weight 1 - (1 - w)/(1 + c);
    the run keeps its taught labels per round, reports the plain hybrid beside the shrunk final, and `lmtx
    evaluate --model RUN` reproduces the final."""
    from lmtx.evaluation.evaluate import evaluate
    from lmtx.loop.run import Runtime, iterate
    from lmtx.search.hybrid import Pools, taught_weight

    assert np.allclose(taught_weight(0.9, np.array([0, 1, 3])), [0.9, 0.95, 0.975])
    # two labels, one document: the words favour label 1, the student label 0 by a little
    p = Pools(
        np.array([[0, 1]]),
        np.array([[0.5, 0.44]]),
        np.array([[0.0, 6.0]]),
        np.zeros(1),
        np.full(1, 0.1),
        np.zeros(1),
        np.ones(1),
    )
    assert p.rank(0.9, 1)[0][0, 0] == 1  # plain hybrid: the words win
    assert p.with_taught(np.array([0, 3])).rank(0.9, 1)[0][0, 0] == 0  # label 1 taught three times: the student wins
    assert p.with_taught(np.array([0, 0])).rank(0.9, 1)[0][0, 0] == 1  # nothing taught: the plain hybrid
    cfg = _cfg(small_data, tiny_encoder, 2, retrieval={"taught": "shrink"})
    out = tmp_path / "run"
    res = list(iterate(cfg, out, Runtime(progress=False, log=lambda s: None)))
    import pandas as pd

    for r in (1, 2):
        yes = set()
        for k in range(1, r + 1):
            j = pd.read_parquet(out / f"round-{k:02d}" / "judgments.parquet")
            yes |= set(zip(j.loc[j["yes"], "doc_id"], j.loc[j["yes"], "label_id"]))
        want = pd.Series([lab for _, lab in yes]).value_counts().to_dict()
        assert json.loads((out / f"round-{r:02d}" / "taught.json").read_text()) == want
    ret = res[-1].metrics["retrieval"]
    assert ret["final"]["mode"] == "hybrid"  # the prior: the label-free choice keeps it here
    assert ret["final"]["taught"] == "shrink" and ret["final"]["taught_labels"] > 0
    w = f"{ret['final']['dense_weight']:g}"
    assert w not in ret["P@1_by_weight"] or ret["hybrid"]["P@1"] == pytest.approx(ret["P@1_by_weight"][w])
    man = json.loads((out / "manifest.json").read_text())
    best = json.loads((out / f"round-{man['best_round']:02d}" / "metrics.json").read_text())
    labels = load_labels(small_data["labels"])
    m = evaluate(str(out), load_docs(small_data["eval"], labels), labels)
    assert m["P@1"] == pytest.approx(best["retrieval"]["final"]["P@1"], abs=1e-9)
    # a run made before the setting (its config.json without it) keeps every label at the one weight
    from lmtx.config import RetrievalConfig, RunConfig, config_diff, keep_legacy

    saved = json.loads((out / "config.json").read_text())
    # made at a former default: the same command with the setting left at today's default resumes it as it was
    today = RunConfig.from_dict(saved | {"retrieval": saved["retrieval"] | {"taught": RetrievalConfig().taught}})
    assert config_diff(saved, today.to_dict()) == ["retrieval.taught: 'shrink' (saved) != 'lagged' (now)"]
    assert keep_legacy(today, saved).retrieval.taught == "shrink"
    assert config_diff(saved, keep_legacy(today, saved).to_dict()) == []
    del saved["retrieval"]["taught"]
    assert keep_legacy(RunConfig(), saved).retrieval.taught == "ignore"


def test_taught_lagged_counts_the_rounds_before_the_encoders_last(tmp_path, small_data, tiny_encoder):
    """retrieval.taught lagged: round r's encoder ranks with the labels confirmed in rounds 1..r-1, so round 1's hands
    out the plain hybrid (no taught.json, no shrink in its final) and round 2's taught.json is round 1's confirmations;
    `lmtx evaluate --model RUN` reproduces the final, and a bad value is refused by name."""
    import pandas as pd

    from lmtx.config import ConfigError, RetrievalConfig
    from lmtx.evaluation.evaluate import evaluate
    from lmtx.loop.run import Runtime, iterate

    with pytest.raises(ConfigError, match="retrieval.taught"):
        RetrievalConfig(taught="lag")
    cfg = _cfg(small_data, tiny_encoder, 2, retrieval={"taught": "lagged"})
    out = tmp_path / "run"
    res = list(iterate(cfg, out, Runtime(progress=False, log=lambda s: None)))
    assert not (out / "round-01" / "taught.json").exists()
    r1 = next(x for x in res if x.round == 1).metrics["retrieval"]
    assert "taught" not in r1["final"] and "hybrid" not in r1
    j = pd.read_parquet(out / "round-01" / "judgments.parquet")
    want = pd.Series([lab for _, lab in set(zip(j.loc[j["yes"], "doc_id"], j.loc[j["yes"], "label_id"]))])
    assert json.loads((out / "round-02" / "taught.json").read_text()) == want.value_counts().to_dict()
    ret = res[-1].metrics["retrieval"]
    if ret["final"]["mode"] == "hybrid":
        assert ret["final"]["taught"] == "lagged" and ret["final"]["taught_labels"] == len(want.unique())
    man = json.loads((out / "manifest.json").read_text())
    assert man["retrieval"]["taught"] == "lagged"
    best = json.loads((out / f"round-{man['best_round']:02d}" / "metrics.json").read_text())
    labels = load_labels(small_data["labels"])
    m = evaluate(str(out), load_docs(small_data["eval"], labels), labels)
    assert m["P@1"] == pytest.approx(best["retrieval"]["final"]["P@1"], abs=1e-9)
