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


class LabelIndex:
    def __init__(self, emb: np.ndarray, kind: str = "exact", M: int = 32, ef_construction: int = 200,
                 ef_search: int = 100, seed: int = 0, _hnsw=None):
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.kind = kind
        self.build = {"M": M, "ef_construction": ef_construction, "seed": seed}
        self.ef_search = ef_search
        self._hnsw = _hnsw
        if kind == "hnsw" and _hnsw is None:
            import hnswlib

            n, dim = self.emb.shape
            idx = hnswlib.Index(space="cosine", dim=dim)
            idx.init_index(max_elements=max(n, 1), M=M, ef_construction=ef_construction, random_seed=seed)
            idx.set_num_threads(1)  # deterministic build
            idx.add_items(self.emb, np.arange(n))
            self._hnsw = idx
        elif kind not in ("hnsw", "exact"):
            raise ValueError(f"unknown index kind {kind!r}")

    @classmethod
    def from_config(cls, emb: np.ndarray, cfg, seed: int = 0) -> "LabelIndex":
        kind = cfg.kind
        if kind == "auto":
            kind = "exact" if len(emb) < cfg.exact_below else "hnsw"
        return cls(emb, kind, cfg.M, cfg.ef_construction, cfg.ef_search, seed)

    def __len__(self):
        return len(self.emb)

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
            tmp = folder / "hnsw.bin.tmp"
            self._hnsw.save_index(str(tmp))
            os.replace(tmp, folder / "hnsw.bin")
        meta = {"kind": self.kind, "build": self.build, "search": {"ef_search": self.ef_search},
                "n": len(self.emb), "dim": int(self.emb.shape[1])}
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
        return cls(emb, meta["kind"], b["M"], b["ef_construction"], meta["search"]["ef_search"], b["seed"], _hnsw=h)


def exact_topk(q: np.ndarray, emb: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(emb))
    idx_out = np.empty((len(q), k), dtype=np.int64)
    sim_out = np.empty((len(q), k), dtype=np.float32)
    for s in range(0, len(q), chunk):
        sims = q[s:s + chunk] @ emb.T  # (c, n_labels)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        psims = np.take_along_axis(sims, part, 1)
        order = np.argsort(-psims, axis=1, kind="stable")
        idx_out[s:s + chunk] = np.take_along_axis(part, order, 1)
        sim_out[s:s + chunk] = np.take_along_axis(psims, order, 1)
    return idx_out, sim_out


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    hits = sum(len(set(a[:k]) & set(e)) for a, e in zip(approx, exact))
    return hits / exact.size
