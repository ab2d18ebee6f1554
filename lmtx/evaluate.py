"""`lmtx evaluate`: ranking metrics of any encoder, any round of a run, or a lexical baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import Doc, LabelSet
from .metrics import propensities, ranking_metrics


def resolve_model(spec: str) -> str:
    """A run folder -> its best encoder (the last round's, or early stopping's choice); a round folder -> its
    encoder; else as given."""
    p = Path(spec)
    if (p / "manifest.json").exists():
        from .rundir import RunDir

        enc = RunDir(p).best_encoder()
        if enc is None:
            raise ValueError(f"{p}: the run has no finished training round yet")
        return str(enc)
    if (p / "encoder" / "modules.json").exists():
        if (p.parent / "manifest.json").exists() and p.name.startswith("round-"):
            from .rundir import RunDir

            if int(p.name[6:]) not in RunDir(p.parent).finished_rounds():
                raise ValueError(f"{p}: this round never finished (its encoder may be half-trained); use the run "
                                 f"folder {p.parent} for its best round, or a finished round")
        return str(p / "encoder")
    return spec


def rank_with_encoder(model_spec: str, docs: list[Doc], labels: LabelSet, k: int, label_text: str = "description",
                      show_progress: bool = False) -> list[list[str]]:
    from .encoder import label_embeddings, load_encoder
    from .index import rank_labels

    path = resolve_model(model_spec)
    model = load_encoder(path)
    lemb = label_embeddings(model, labels, label_text, cache_for=path, progress=show_progress)
    idx, _ = rank_labels(model, [d.text for d in docs], lemb, k, show_progress=show_progress)
    return [[labels.ids[i] for i in row] for row in idx]


def rank_lexical(kind: str, docs: list[Doc], labels: LabelSet, k: int, label_text: str = "description") -> list[list[str]]:
    """TF-IDF cosine (scikit-learn) or BM25 (bm25s) between document text and label text."""
    ltexts = [l.text(label_text) for l in labels.labels]
    k = min(k, len(labels))
    if kind == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
        vec.fit(ltexts + [d.text for d in docs])
        from .index import query_chunk

        L = vec.transform(ltexts).T.tocsc()
        out = []
        step = query_chunk(len(ltexts))  # dense (chunk x labels) scores stay under the exact-search budget
        for s in range(0, len(docs), step):
            S = (vec.transform([d.text for d in docs[s:s + step]]) @ L).toarray().astype(np.float32)
            part = np.argpartition(-S, k - 1, axis=1)[:, :k]
            ps = np.take_along_axis(S, part, 1)
            order = np.lexsort((part, -ps), axis=1)  # ties: lower label index first, as exact search
            idx = np.take_along_axis(part, order, 1)
            out.extend([[labels.ids[i] for i in row] for row in idx])
        return out
    if kind == "bm25":
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(ltexts, stopwords="en", show_progress=False), show_progress=False)
        out = []
        from .index import query_chunk

        step = query_chunk(len(ltexts))
        for s in range(0, len(docs), step):  # in chunks, as for TF-IDF: memory stays chunk x labels
            q = bm25s.tokenize([d.text for d in docs[s:s + step]], stopwords="en", show_progress=False)
            # the best k + 100 by bm25s's own top-k (sparse scoring: never every label's score at 783k labels),
            # then a stable order (ties by label position): the same ranking on every run
            idx, sc = retriever.retrieve(q, k=min(len(ltexts), k + 100), show_progress=False)
            for row_i, row_s in zip(np.asarray(idx), np.asarray(sc)):
                order = np.lexsort((row_i, -row_s))[:k]
                out.append([labels.ids[int(row_i[o])] for o in order])
        return out
    raise ValueError(f"unknown baseline {kind!r}: tfidf or bm25")


def evaluate(model: str | None, docs: list[Doc], labels: LabelSet, ks=(1, 3, 5, 10), baseline: str | None = None,
             label_text: str = "description", A: float = 0.55, B: float = 1.5, show_progress: bool = False) -> dict:
    from .config import LABEL_TEXTS, one_of

    one_of(label_text, LABEL_TEXTS, "--label-text", ValueError)
    docs = [d for d in docs if d.labels]
    if not docs:
        raise ValueError("no documents with gold labels to evaluate on")
    kmax = max(ks)
    if baseline:
        ranked = rank_lexical(baseline, docs, labels, kmax, label_text)
        name = baseline
    else:
        ranked = rank_with_encoder(model, docs, labels, kmax, label_text, show_progress)
        name = model
    gold = [set(d.labels) for d in docs]
    m = ranking_metrics(ranked, gold, ks=ks, recall_ks=ks, prop=propensities(gold, A=A, B=B))
    return {"model": name, **m}


def format_metrics(m: dict) -> str:
    keys = [k for k in m if "@" in k]
    head = "| " + " | ".join(keys) + " |"
    return head + "\n|" + "---|" * len(keys) + "\n| " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |"


def write_json(path: str | Path, obj):
    from .rundir import write_json as w

    w(Path(path), obj)
    return json.dumps(obj)
