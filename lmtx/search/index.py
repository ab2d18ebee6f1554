"""LabelIndex: top-k labels for query embeddings by cosine, over hnswlib or exact search.

Build-time settings (M, ef_construction) and search-time ones (ef_search, k) are kept apart and saved
beside the index as JSON; save -> load gives identical results. Exact search is the fallback for small
label sets and the reference for recall.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..store.files import replacing


def sized_hnsw(n: int, M: int = 32, ef_construction: int = 200, ef_search: int = 100) -> tuple[int, int, int]:
    """HNSW parameters grown with the label count (never below the configured ones): recall at a fixed ef falls
    as the graph grows, so ef_search and ef_construction rise with log(n) above 100k labels."""
    import math

    if n <= 100_000:
        return M, ef_construction, ef_search
    f = 1 + math.log10(n / 100_000)  # 783k labels: x1.9
    return max(M, 48 if n > 500_000 else M), max(ef_construction, int(200 * f)), max(ef_search, int(128 * f))


class LabelIndex:
    """Top-k labels by cosine similarity for L2-normalized query embeddings.

    emb: (n_labels, dim) L2-normalized label embeddings (kept, float32). kind: ``exact`` (chunked matrix
    products with argpartition; memory bounded by lmtx.evaluation.metrics' budget) or ``hnsw`` (hnswlib, cosine space;
    M and ef_construction at build time, ef_search at query time). ``query(q, k)`` returns (indices, scores),
    each (n_queries, k), best first; ``measure_recall`` compares an HNSW index with exact search on sampled
    labels as queries; ``save``/``load`` round-trip the index and its settings (JSON beside the graph).
    """

    def __init__(
        self,
        emb: np.ndarray,
        kind: str = "exact",
        M: int = 32,
        ef_construction: int = 200,
        ef_search: int = 100,
        seed: int = 0,
        _hnsw=None,
        threads: int = -1,
    ):
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.kind = kind
        self.build = {"M": M, "ef_construction": ef_construction, "seed": seed}
        self.ef_search = ef_search
        self._hnsw = _hnsw
        self.recall_at_10: float | None = None  # measured against exact search when built (measure_recall)
        self.build_s: float | None = None  # seconds the graph took to build (None when loaded from disk)
        if kind == "hnsw" and _hnsw is None:
            import hnswlib

            n, dim = self.emb.shape
            idx = hnswlib.Index(space="cosine", dim=dim)
            idx.init_index(max_elements=max(n, 1), M=M, ef_construction=ef_construction, random_seed=seed)
            # all cores (-1) for the build; threads=1 gives a bit-identical graph for the same seed
            idx.set_num_threads((os.cpu_count() or 1) if threads in (-1, 0, None) else threads)
            idx.add_items(self.emb, np.arange(n))
            idx.set_num_threads(1)  # queries come in chunks from one caller
            self._hnsw = idx
        elif kind not in ("hnsw", "exact"):
            raise ValueError(f"unknown index kind {kind!r}")

    @classmethod
    def from_config(
        cls, emb: np.ndarray, cfg, seed: int = 0, threads: int = -1, n_queries: int | None = None
    ) -> "LabelIndex":
        """``auto``: exact below cfg.exact_below labels, or when the index will serve at most cfg.exact_queries
        queries (``n_queries``; exact search is then cheaper than building a graph); HNSW otherwise."""
        kind = cfg.kind
        if kind == "auto":
            few = n_queries is not None and n_queries <= getattr(cfg, "exact_queries", 0)
            kind = "exact" if len(emb) < cfg.exact_below or few else "hnsw"
        M, efc, efs = sized_hnsw(len(emb), cfg.M, cfg.ef_construction, cfg.ef_search)
        return cls(emb, kind, M, efc, efs, seed, threads=threads)

    def __len__(self):
        return len(self.emb)

    def measure_recall(
        self, sample: int = 1000, k: int = 10, seed: int = 0, queries: np.ndarray | None = None
    ) -> float:
        """recall@k of this index against exact search, on ``queries`` or on a sample of the labels' own
        vectors slightly perturbed (the index's hard case: near-duplicates); 1.0 for an exact index."""
        if self.kind == "exact" or len(self.emb) == 0:
            return 1.0
        if queries is None:
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(self.emb), size=min(sample, len(self.emb)), replace=False)
            queries = self.emb[pick] + rng.normal(0, 0.05, (len(pick), self.emb.shape[1])).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        approx, _ = self.query(queries, k)
        exact, _ = exact_topk(np.ascontiguousarray(queries, dtype=np.float32), self.emb, k)
        return recall_at_k(approx, exact)

    def query(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, cosine similarities), each (n_queries, k), best first."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        k = min(k, len(self.emb))
        if self.kind == "exact":
            return exact_topk(q, self.emb, k)
        self._hnsw.set_ef(max(self.ef_search, k))
        idx, dist = self._hnsw.knn_query(q, k=k)
        return idx.astype(np.int64), (1.0 - dist).astype(np.float32)

    def save(self, folder: str | Path):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "labels.npy", self.emb)
        if self.kind == "hnsw":
            with replacing(folder / "hnsw.bin") as tmp:
                self._hnsw.save_index(str(tmp))
        meta = {
            "kind": self.kind,
            "build": self.build,
            "search": {"ef_search": self.ef_search},
            "n": len(self.emb),
            "dim": int(self.emb.shape[1]),
            "recall_at_10": self.recall_at_10,
        }
        (folder / "index.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "LabelIndex":
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text())
        emb = np.load(folder / "labels.npy")
        h = None
        if meta["kind"] == "hnsw":
            import hnswlib

            h = hnswlib.Index(space="cosine", dim=meta["dim"])
            h.load_index(str(folder / "hnsw.bin"), max_elements=meta["n"])
        b = meta["build"]
        idx = cls(emb, meta["kind"], b["M"], b["ef_construction"], meta["search"]["ef_search"], b["seed"], _hnsw=h)
        idx.recall_at_10 = meta.get("recall_at_10")
        return idx


def build_index(
    emb: np.ndarray, cfg, seed: int = 0, n_queries: int | None = None, recall_sample: int = 1000, log=None
) -> LabelIndex:
    """LabelIndex.from_config, and for an HNSW graph its recall@10 against exact search on ``recall_sample``
    perturbed labels, measured and logged (with the build time) every time one is built."""
    import time

    t0 = time.time()
    index = LabelIndex.from_config(emb, cfg, seed, n_queries=n_queries)
    if index.kind == "hnsw":
        built = index.build_s = time.time() - t0
        index.recall_at_10 = index.measure_recall(sample=recall_sample, seed=seed)
        if log:
            log(
                f"[lmtx] HNSW over {len(emb)} labels built in {built:.0f}s (M {index.build['M']}, ef_construction "
                f"{index.build['ef_construction']}, ef_search {index.ef_search}); recall@10 vs exact search on "
                f"{min(recall_sample, len(emb)):,} sampled queries: {index.recall_at_10:.3f}"
            )
    return index


# Exact search holds one (chunk x labels) float32 score block at a time (plus argpartition's work space); the
# chunk of queries is sized so that this stays under the budget whatever the label count (783k labels: ~55
# queries per block at 512 MiB, instead of 13 GB for a fixed 4,096).
EXACT_BUDGET_BYTES = 512 << 20


def query_chunk(n_labels: int, budget_bytes: int = EXACT_BUDGET_BYTES) -> int:
    return max(1, min(8192, budget_bytes // max(1, 3 * 4 * n_labels)))


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best columns and their scores, best first; a tie (also one at the k-th place) goes to the lower
    column index, so the ranking is the same on every run and machine. The one top-k of lmtx's exact rankings."""
    scores = np.atleast_2d(scores)
    n = scores.shape[1]
    k = min(k, n)
    if k < n:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
        above = scores > kth
        ties = scores == kth
        keep = above | (ties & (np.cumsum(ties, axis=1) <= k - above.sum(axis=1, keepdims=True)))
        part = np.nonzero(keep)[1].reshape(len(scores), k)
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    vals = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, 1).astype(np.int64), np.take_along_axis(vals, order, 1)


def exact_topk(
    q: np.ndarray, emb: np.ndarray, k: int, chunk: int | None = None, budget_bytes: int = EXACT_BUDGET_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k of normalized vectors; ties keep the lower label index first."""
    k = min(k, len(emb))
    chunk = chunk or query_chunk(len(emb), budget_bytes)
    idx_out = np.empty((len(q), k), dtype=np.int64)
    sim_out = np.empty((len(q), k), dtype=np.float32)
    for s in range(0, len(q), chunk):
        idx_out[s : s + chunk], sim_out[s : s + chunk] = top_k_rows(q[s : s + chunk] @ emb.T, k)  # (c, n_labels) block
    return idx_out, sim_out


def rank_labels(
    model,
    doc_texts: list[str],
    label_emb_or_texts,
    k: int,
    index: "LabelIndex | None" = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the documents with ``model`` and return their top-k labels (indices, cosines), best first: the one
    place that does "embed, then search". Labels come as texts (embedded here), as an embedding matrix, or as a
    built LabelIndex (``index``)."""
    from .encoder import embed

    demb = embed(model, list(doc_texts), batch_size, show_progress, "embedding docs")
    if index is not None:
        return index.query(demb, k)
    lemb = label_emb_or_texts
    if not isinstance(lemb, np.ndarray):
        from .fast_encode import encode_labels

        lemb, _ = encode_labels(model, list(lemb), "auto", batch_size, show_progress)
    return exact_topk(demb, lemb, k)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    hits = sum(len(set(a[:k]) & set(e)) for a, e in zip(approx, exact))
    return hits / exact.size
