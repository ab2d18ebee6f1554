"""The label index (lmtx.search.index): exact and HNSW search, memory budgets, the cached label matrix."""

import numpy as np

from lmtx.search.index import LabelIndex, exact_topk, recall_at_k


def _unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_recall_against_exact_and_save_load(tmp_path):
    labels, queries = _unit(3000, 32, 0), _unit(300, 32, 1)
    idx = LabelIndex(labels, "hnsw", M=16, ef_construction=200, ef_search=200)
    got, sims = idx.query(queries, 10)
    ref, ref_sims = exact_topk(queries, labels, 10)
    assert recall_at_k(got, ref) >= 0.95
    assert np.allclose(sims[:, 0], (queries * labels[got[:, 0]]).sum(1), atol=1e-5)  # cosine, best first
    assert (np.diff(ref_sims, axis=1) <= 1e-6).all()
    idx.save(tmp_path / "ix")
    again = LabelIndex.load(tmp_path / "ix")
    g2, s2 = again.query(queries, 10)
    assert (g2 == got).all() and np.allclose(s2, sims)


def test_exact_matches_bruteforce():
    labels, queries = _unit(50, 8, 2), _unit(20, 8, 3)
    idx, sims = LabelIndex(labels, "exact").query(queries, 5)
    full = queries @ labels.T
    assert (idx == np.argsort(-full, axis=1)[:, :5]).all()


def test_exact_topk_memory_budget_sets_the_chunk_and_not_the_answer():
    from lmtx.search.index import exact_topk, query_chunk

    rng = np.random.default_rng(0)
    lab = rng.normal(size=(3000, 16)).astype(np.float32)
    lab /= np.linalg.norm(lab, axis=1, keepdims=True)
    q = rng.normal(size=(257, 16)).astype(np.float32)
    a = exact_topk(q, lab, 7, chunk=257)
    b = exact_topk(q, lab, 7, budget_bytes=3000 * 12 * 5)  # 5 queries per block
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    assert query_chunk(3000, 3000 * 12 * 5) == 5
    assert query_chunk(783_728) <= 60  # 783k labels: one block stays under 512 MiB
    # ties: the lower label index first
    dup = np.vstack([lab[:1], lab[:1], lab[1:4]])
    idx, _ = exact_topk(lab[:1], dup, 2)
    assert idx.tolist() == [[0, 1]]


def test_hnsw_parameters_grow_with_labels_and_recall_is_measured():
    from lmtx.config import IndexConfig
    from lmtx.search.index import LabelIndex, sized_hnsw

    assert sized_hnsw(50_000) == (32, 200, 100)
    M, efc, efs = sized_hnsw(783_728)
    assert M >= 48 and efc > 200 and efs > 128
    rng = np.random.default_rng(1)
    lab = rng.normal(size=(5000, 32)).astype(np.float32)
    lab /= np.linalg.norm(lab, axis=1, keepdims=True)
    idx = LabelIndex.from_config(lab, IndexConfig(kind="hnsw"))
    r = idx.measure_recall(sample=300)
    assert 0.9 <= r <= 1.0
    assert LabelIndex.from_config(lab, IndexConfig(kind="exact")).measure_recall() == 1.0
    # a deliberately starved index measures worse (the measurement can fail)
    bad = LabelIndex(lab, "hnsw", M=2, ef_construction=4, ef_search=1, threads=1)
    bad._hnsw.set_ef(1)
    assert bad.measure_recall(sample=300) < r


def test_tfidf_baseline_chunks_by_memory_and_ranks_as_a_full_sort(monkeypatch):
    import lmtx.evaluation.evaluate as E
    import lmtx.search.index as I
    from lmtx.store.data import Doc, Label, LabelSet

    labels = LabelSet([Label(f"l{i}", f"name {i}", f"word{i % 7} topic{i % 5} thing{i}") for i in range(60)])
    docs = [Doc(f"d{i}", f"word{i % 7} topic{i % 3} thing{i} thing{i + 1}") for i in range(25)]
    full = E.rank_lexical("tfidf", docs, labels, 5)
    monkeypatch.setattr(I, "EXACT_BUDGET_BYTES", 60 * 12 * 4)  # 4 docs per block
    monkeypatch.setattr(I.query_chunk, "__defaults__", (60 * 12 * 4,))
    assert E.rank_lexical("tfidf", docs, labels, 5) == full


def test_initial_label_embeddings_are_cached_across_runs(tmp_path, monkeypatch, tiny_encoder):
    import lmtx.search.encoder as E
    from lmtx.store.data import Label, LabelSet

    monkeypatch.setenv("LMTX_HOME", str(tmp_path))
    model = E.load_encoder(tiny_encoder)
    labels = LabelSet([Label(f"l{i}", f"n{i}", f"audio game {i}") for i in range(20)])
    import lmtx.search.fast_encode as F

    calls = []
    real = F.embed
    monkeypatch.setattr(F, "embed", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = E.label_embeddings(model, labels, "description", cache_for=tiny_encoder)
    b = E.label_embeddings(model, labels, "description", cache_for=tiny_encoder)
    assert len(calls) == 1 and np.array_equal(a, b) and len(list((tmp_path / "label-emb").glob("*.npy"))) == 1
    other = LabelSet(labels.labels[:-1] + [Label("l19", "n19", "changed text")])
    E.label_embeddings(model, other, "description", cache_for=tiny_encoder)
    assert len(calls) == 2  # other label texts: another key
    E.label_embeddings(model, labels, "description")  # a trained encoder: never cached
    assert len(calls) == 3


def test_auto_index_searches_exactly_when_queries_are_few():
    """Over many labels, a round with few queries searches exactly (cheaper than building a graph)."""
    import numpy as np

    from lmtx.config import IndexConfig
    from lmtx.search.index import LabelIndex

    emb = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cfg = IndexConfig(exact_queries=100)
    assert LabelIndex.from_config(emb, cfg, n_queries=50).kind == "exact"
    assert LabelIndex.from_config(emb, cfg, n_queries=500).kind == "hnsw"
    assert LabelIndex.from_config(emb, cfg).kind == "hnsw"  # unknown query count: by label count alone
    assert LabelIndex.from_config(emb[:100], cfg, n_queries=500).kind == "exact"
