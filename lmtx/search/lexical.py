"""The lexical side: BM25 (bm25s) over the label texts, built once per label set and cached.

Label texts do not change between rounds (their embeddings do), so the index is built once per (label file,
label text) and kept under ``$LMTX_HOME/lexical/``. Two questions are asked of it:

* ``topk(texts, k)``: each document's k best labels by BM25 (bm25s's own scoring, the same ranking as the
  ``--baseline bm25`` row), one document at a time, so memory is one score vector of n_labels floats;
* ``pair_scores(texts, doc_idx, label_idx)``: the BM25 score of given (document, label) pairs, from the same
  per-(label, token) weights as a sparse matrix (the scores of labels the dense side retrieved, and of every
  judged pair).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..config import LARGE_LABEL_SET
from ..store.files import replacing
from .index import top_k_rows

STOPWORDS = "en"


def tokens(texts: list[str]) -> list[list[str]]:
    """bm25s's tokenizer (lowercase, words of 2+ characters, English stopwords out), as strings."""
    import bm25s

    if not texts:
        return []
    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, return_ids=False, show_progress=False)


class LexicalIndex:
    """BM25 over label texts. ``retriever`` is a bm25s.BM25 indexed on them (label i = bm25s document i)."""

    def __init__(self, retriever, n_labels: int):
        self.retriever = retriever
        self.n = n_labels
        self._csr = None
        self._q = None  # (the texts list, its query matrix): the last one built, reused for the same list object

    @classmethod
    def build(cls, label_texts: list[str]) -> "LexicalIndex":
        import bm25s

        r = bm25s.BM25()
        toks = bm25s.tokenize(list(label_texts), stopwords=STOPWORDS, show_progress=False)
        r.index(toks, show_progress=False)
        return cls(r, len(label_texts))

    def __len__(self) -> int:
        return self.n

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's tokens that the labels' vocabulary knows, as its ids (duplicates kept, as bm25s scores them)."""
        vocab = self.retriever.vocab_dict
        return [[vocab[w] for w in t if w in vocab] for t in tokens(texts)]

    # -- the sparse matrix view: (n_labels x vocabulary) BM25 weights --------------------------------------------
    @property
    def weights(self):
        if self._csr is None:
            import scipy.sparse as sp

            s = self.retriever.scores
            vocab = len(s["indptr"]) - 1
            self._csr = sp.csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], vocab)).tocsr()
        return self._csr

    def query_matrix(self, texts: list[str]):
        """(n_texts x vocabulary) counts of each text's in-vocabulary tokens (duplicates count, as in bm25s)."""
        import scipy.sparse as sp

        if self._q is not None and self._q[0] is texts and self._q[1] == len(texts):
            return self._q[2]

        rows, cols = [], []
        for i, ids in enumerate(self._token_ids(texts)):
            rows.extend([i] * len(ids))
            cols.extend(ids)
        data = np.ones(len(rows), dtype=np.float32)
        q = sp.csr_matrix((data, (rows, cols)), shape=(len(texts), self.weights.shape[1]))
        q.sum_duplicates()
        self._q = (texts, len(texts), q)
        return q

    def pair_scores(self, texts: list[str], doc_idx, label_idx, q=None) -> np.ndarray:
        """BM25 score of each (texts[doc_idx[p]], label label_idx[p]) pair. ``q``: query_matrix(texts), if built."""
        doc_idx, label_idx = np.asarray(doc_idx, np.int64), np.asarray(label_idx, np.int64)
        if len(doc_idx) == 0:
            return np.zeros(0, np.float32)
        q = self.query_matrix(texts) if q is None else q
        out = np.empty(len(doc_idx), np.float32)
        step = 200_000  # pairs at a time: two sparse row blocks of that many rows
        for s in range(0, len(doc_idx), step):
            a = self.weights[label_idx[s : s + step]]
            b = q[doc_idx[s : s + step]]
            out[s : s + step] = np.asarray(a.multiply(b).sum(axis=1)).ravel()
        return out

    def topk(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, BM25 scores), each (n_texts, k), best first; ties by lower label index (the same ranking on
        every run). A text with no word in the labels' vocabulary scores 0 everywhere."""
        return self.topk_stats(texts, k)[:2]

    def topk_stats(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``topk``, with each text's mean and standard deviation of BM25 over every label (float64), taken from the
        same full score vector: what the hybrid ranking standardizes the lexical side by."""
        k = min(k, self.n)
        idx = np.empty((len(texts), k), np.int64)
        sc = np.empty((len(texts), k), np.float32)
        mu = np.zeros(len(texts))
        sd = np.zeros(len(texts))
        for i, ids in enumerate(self._token_ids(texts)):
            s = (self.retriever.get_scores_from_ids(ids) if ids else np.zeros(self.n, np.float32)).astype(np.float32)
            idx[i], sc[i] = (x[0] for x in top_k_rows(s, k))
            mu[i], sd[i] = float(s.mean(dtype=np.float64)), float(s.std(dtype=np.float64))
        return idx, sc, mu, sd

    # -- persistence ----------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        self.retriever.save(str(folder))

    @classmethod
    def load(cls, folder: str | Path) -> "LexicalIndex":
        import bm25s

        r = bm25s.BM25.load(str(folder), load_corpus=False)
        return cls(r, int(r.scores["num_docs"]))


def lexical_index(labels, label_text: str, log=None) -> LexicalIndex:
    """The BM25 index of a label set's texts, from ``$LMTX_HOME/lexical/`` or built once and saved there
    (atomically: a temporary sibling folder renamed into place)."""
    from ..store.assets import lmtx_home
    from .encoder import fingerprint_labels

    folder = lmtx_home() / "lexical" / fingerprint_labels(labels, label_text)
    if (folder / "params.index.json").exists():
        try:
            return LexicalIndex.load(folder)
        except Exception:  # damaged: rebuilt below
            shutil.rmtree(folder, ignore_errors=True)
    if log and len(labels) >= LARGE_LABEL_SET:
        log(f"[lmtx] building the BM25 index of {len(labels):,} label texts (once; cached in {folder})")
    idx = LexicalIndex.build([lab.text(label_text) for lab in labels.labels])
    with replacing(folder, per_process=True) as tmp:
        idx.save(tmp)
        if not (tmp / "params.index.json").exists():  # what load() checks for; name it if bm25s renamed it
            raise RuntimeError(f"bm25s did not write params.index.json into {tmp}")
    return idx
