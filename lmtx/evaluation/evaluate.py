"""`lmtx evaluate`: ranking metrics of any encoder, any round of a run, or a lexical baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..store.data import Doc, LabelSet
from .metrics import propensities, ranking_metrics


def resolve_model(spec: str) -> str:
    """A run folder -> its best encoder (the last round's, or early stopping's choice); a round folder -> its
    encoder; else as given."""
    p = Path(spec)
    if (p / "manifest.json").exists():
        from ..store.rundir import RunDir

        enc = RunDir(p).best_encoder()
        if enc is None:
            raise ValueError(f"{p}: the run has no finished training round yet")
        return str(enc)
    if (p / "encoder" / "modules.json").exists():
        if (p.parent / "manifest.json").exists() and p.name.startswith("round-"):
            from ..store.rundir import RunDir

            if int(p.name[6:]) not in RunDir(p.parent).finished_rounds():
                raise ValueError(
                    f"{p}: this round never finished (its encoder may be half-trained); use the run "
                    f"folder {p.parent} for its best round, or a finished round"
                )
        return str(p / "encoder")
    return spec


def run_record(spec: str) -> tuple[dict | None, dict | None]:
    """(the retrieval record, the saved config) of a run folder or one of its round folders; (None, None) for a
    plain encoder. A round folder gets its own label-free choice where one was made."""
    p = Path(spec)
    run = p if (p / "manifest.json").exists() else p.parent if (p.parent / "manifest.json").exists() else None
    if run is None:
        return None, None
    from ..store.rundir import read_json

    man = read_json(run / "manifest.json")
    cfg = read_json(run / "config.json") if (run / "config.json").exists() else {}
    rec = dict(man.get("retrieval") or {})
    if rec:
        rec["run_dir"] = str(run)
    if run != p and p.name.startswith("round-") and rec:
        choice = man.get("retrieval_choice", {}).get(str(int(p.name[6:])))
        w = float(choice["dense_weight"]) if choice else (rec["dense_weight"] if rec.get("setting") != "auto" else 1.0)
        from ..search.hybrid import mode_of

        rec.update(round=int(p.name[6:]), dense_weight=w, mode=mode_of(w))
    return (rec or None), cfg


def resolve_retrieval(
    model_spec: str | None, retrieval: str = "auto", dense_weight: float | None = None, label_text: str | None = None
) -> dict:
    """What to rank with: ``auto`` takes a run's own choice (its manifest's "retrieval"; dense for a plain
    encoder); dense | lexical | hybrid (at ``dense_weight``, else the run's hybrid weight, else the default
    retrieval.dense_weight for a run, retrieval.zero_shot_weight for an encoder lmtx has not trained). ``label_text``:
    given, else the run's, else the default."""
    from ..config import DEFAULT_LABEL_TEXT, LABEL_TEXTS, RetrievalConfig, one_of
    from ..search.hybrid import RETRIEVALS

    one_of(retrieval, ("auto", *RETRIEVALS), "--retrieval", ValueError)
    if dense_weight is not None and not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"--dense-weight must be in [0, 1] (1 = dense only), got {dense_weight}")
    rec, cfg = run_record(model_spec) if model_spec else (None, None)
    lt = (
        label_text
        or (rec or {}).get("label_text")
        or ((cfg or {}).get("encoder") or {}).get("label_text")
        or DEFAULT_LABEL_TEXT
    )
    one_of(lt, LABEL_TEXTS, "--label-text", ValueError)
    pool = int((rec or {}).get("pool") or RetrievalConfig.pool)
    # a run folder from before retrieval.standardize ranked with each side's top-pool statistics
    standardize = (rec or {}).get("standardize") or ("pool" if rec else RetrievalConfig.standardize)
    if retrieval == "auto":
        mode, w = (rec["mode"], float(rec["dense_weight"])) if rec else ("dense", 1.0)
        if dense_weight is not None and mode == "hybrid":
            w = dense_weight
    elif retrieval == "hybrid":
        mode = "hybrid"
        if dense_weight is not None:
            w = dense_weight
        elif rec and rec.get("mode") == "hybrid":
            w = float(rec["dense_weight"])
        else:  # the default prior: a run's encoders are trained, a plain encoder is as fetched
            w = RetrievalConfig().dense_weight if rec else RetrievalConfig().zero_shot_weight
    else:
        mode, w = retrieval, (1.0 if retrieval == "dense" else 0.0)
    if mode == "hybrid" and w >= 1.0:
        mode = "dense"
    if mode == "hybrid" and w <= 0.0:
        mode = "lexical"
    round_dir = Path(rec["run_dir"]) / f"round-{int(rec.get('round', 0)):02d}" if rec else None
    # retrieval.taught shrink / lagged: the taught labels saved with the round it ranks with (a run made before it, or
    # lagged's round 1: none)
    taught = None
    if mode == "hybrid" and rec is not None and rec.get("taught", "ignore") != "ignore":
        from ..search.hybrid import taught_file

        f = taught_file(round_dir)
        taught = str(f) if f.exists() else None
    # retrieval.hubness: the run's penalty (a run made before it, or a plain encoder: none)
    hub = float((rec or {}).get("hubness") or 0.0) if mode != "lexical" else 0.0
    return {
        "mode": mode,
        "dense_weight": w,
        "label_text": lt,
        "pool": pool,
        "standardize": standardize,
        "from_run": retrieval == "auto" and rec is not None,
        "hubness": hub,
        "hubness_round": str(round_dir) if hub > 0 else None,
        "hubness_k": int((rec or {}).get("hubness_k") or RetrievalConfig.hubness_k),
        "hubness_docs": ((cfg or {}).get("loop") or {}).get("docs") if hub > 0 else None,
        "taught": taught,
    }


def run_penalty(how: dict, model, labels: LabelSet, lemb: np.ndarray, batch_size: int = 64, log=None):
    """The hubness penalty a run ranks with (``how`` from resolve_retrieval): hubness x r(l), r(l) as the run saved it
    for this label set beside the round's encoder, else from the run's training documents (another label file);
    None when the run has none, or neither is there (said in ``log``)."""
    if not how.get("hubness") or how["mode"] == "lexical":
        return None
    from ..search.hybrid import hubness_file, label_hubness

    path = hubness_file(how["hubness_round"], labels, how["label_text"])
    if path.exists():
        r = np.load(path)
        if len(r) == len(labels):
            return (how["hubness"] * r).astype(np.float32)
    docs = how.get("hubness_docs")
    if not docs or not Path(docs).exists():
        if log:
            run = Path(how["hubness_round"]).parent
            log(f"[lmtx] {run}: no hubness r(l) for these labels and no training documents to compute it; no penalty")
        return None
    from ..search.encoder import embed
    from ..store.data import load_docs

    texts = [d.text for d in load_docs(docs, labels)]
    r = label_hubness(lemb, embed(model, texts, batch_size), how["hubness_k"])
    return (how["hubness"] * r).astype(np.float32)


def make_ranker(
    model_spec: str | None,
    labels: LabelSet,
    how: dict,
    index_for=None,
    batch_size: int = 64,
    show_progress: bool = False,
    label_backend: str = "auto",
    log=None,
):
    """A hybrid.Ranker for ``how`` (resolve_retrieval): the encoder (not loaded for lexical), its label index, and the
    labels' BM25 index (not built for dense). ``index_for(model, path)``: the label index to search (tag's cached
    HNSW / exact one); default an exact index over the cached label embeddings."""
    from ..search.hybrid import Ranker
    from ..search.index import LabelIndex

    model = index = None
    if how["mode"] != "lexical":
        from ..search.encoder import label_embeddings, load_encoder

        path = resolve_model(model_spec)
        model = load_encoder(path)
        if index_for is not None:
            index = index_for(model, path)
        else:
            lemb = label_embeddings(
                model,
                labels,
                how["label_text"],
                batch_size,
                cache_for=path,
                progress=show_progress,
                backend=label_backend,
                log=log,
            )
            index = LabelIndex(lemb, "exact")
    lexical = None
    if how["mode"] != "dense":
        from ..search.lexical import lexical_index

        lexical = lexical_index(labels, how["label_text"], log)
    penalty = None if index is None else run_penalty(how, model, labels, index.emb, batch_size, log)
    taught = None
    if how.get("taught"):
        from ..search.hybrid import load_taught

        taught = load_taught(how["taught"], labels)
    return Ranker(
        model,
        index,
        lexical,
        how["mode"],
        how["dense_weight"],
        how["pool"],
        batch_size,
        how["standardize"],
        penalty,
        taught,
    )


def rank_with_encoder(
    model_spec: str,
    docs: list[Doc],
    labels: LabelSet,
    k: int,
    label_text: str | None = None,
    show_progress: bool = False,
    retrieval: str = "auto",
    dense_weight: float | None = None,
) -> tuple[list[list[str]], dict]:
    """Each document's top-k label ids by the retrieval ``resolve_retrieval`` picks, and that choice."""
    how = resolve_retrieval(model_spec, retrieval, dense_weight, label_text)
    ranker = make_ranker(model_spec, labels, how, show_progress=show_progress)
    idx, _ = ranker.rank([d.text for d in docs], k)
    return [[labels.ids[i] for i in row] for row in idx], how


def rank_lexical(
    kind: str, docs: list[Doc], labels: LabelSet, k: int, label_text: str = "description"
) -> list[list[str]]:
    """TF-IDF cosine (scikit-learn) or BM25 (bm25s) between document text and label text."""
    ltexts = [l.text(label_text) for l in labels.labels]
    k = min(k, len(labels))
    if kind == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
        vec.fit(ltexts + [d.text for d in docs])
        from ..search.index import query_chunk, top_k_rows

        L = vec.transform(ltexts).T.tocsc()
        out = []
        step = query_chunk(len(ltexts))  # dense (chunk x labels) scores stay under the exact-search budget
        for s in range(0, len(docs), step):
            S = (vec.transform([d.text for d in docs[s : s + step]]) @ L).toarray().astype(np.float32)
            idx, _ = top_k_rows(S, k)  # ties: lower label index first, as exact search
            out.extend([[labels.ids[i] for i in row] for row in idx])
        return out
    if kind == "bm25":
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(ltexts, stopwords="en", show_progress=False), show_progress=False)
        out = []
        from ..search.index import query_chunk

        step = query_chunk(len(ltexts))
        for s in range(0, len(docs), step):  # in chunks, as for TF-IDF: memory stays chunk x labels
            q = bm25s.tokenize([d.text for d in docs[s : s + step]], stopwords="en", show_progress=False)
            # the best k + 100 by bm25s's own top-k (sparse scoring: never every label's score at 783k labels),
            # then a stable order (ties by label position): the same ranking on every run
            idx, sc = retriever.retrieve(q, k=min(len(ltexts), k + 100), show_progress=False)
            for row_i, row_s in zip(np.asarray(idx), np.asarray(sc)):
                order = np.lexsort((row_i, -row_s))[:k]
                out.append([labels.ids[int(row_i[o])] for o in order])
        return out
    raise ValueError(f"unknown baseline {kind!r}: tfidf or bm25")


def evaluate(
    model: str | None,
    docs: list[Doc],
    labels: LabelSet,
    ks=(1, 3, 5, 10),
    baseline: str | None = None,
    label_text: str | None = None,
    A: float = 0.55,
    B: float = 1.5,
    show_progress: bool = False,
    retrieval: str = "auto",
    dense_weight: float | None = None,
) -> dict:
    """Ranking metrics of a model (``retrieval``: auto = a run's own choice, dense, lexical or hybrid) or of a
    lexical baseline (tfidf | bm25) on the gold-labelled documents."""
    from ..config import DEFAULT_LABEL_TEXT, LABEL_TEXTS, one_of

    if label_text is not None:
        one_of(label_text, LABEL_TEXTS, "--label-text", ValueError)
    docs = [d for d in docs if d.labels]
    if not docs:
        raise ValueError("no documents with gold labels to evaluate on")
    kmax = max(ks)
    extra = {}
    if baseline:
        ranked = rank_lexical(baseline, docs, labels, kmax, label_text or DEFAULT_LABEL_TEXT)
        name = baseline
    else:
        ranked, how = rank_with_encoder(model, docs, labels, kmax, label_text, show_progress, retrieval, dense_weight)
        name = model
        extra = {"retrieval": how["mode"], "dense_weight": how["dense_weight"], "label_text": how["label_text"]}
    gold = [set(d.labels) for d in docs]
    m = ranking_metrics(ranked, gold, ks=ks, recall_ks=ks, prop=propensities(gold, A=A, B=B))
    return {"model": name, **extra, **m}


def format_metrics(m: dict) -> str:
    keys = [k for k in m if "@" in k]
    head = "| " + " | ".join(keys) + " |"
    return head + "\n|" + "---|" * len(keys) + "\n| " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |"


def write_json(path: str | Path, obj):
    from ..store.rundir import write_json as w

    w(Path(path), obj)
    return json.dumps(obj)
