"""lmtx as a library: the objects and functions the command line is a thin layer over.

    import lmtx

    tagger = lmtx.Tagger.load("runs/demo")                  # a run folder: its best round, ranked as the run chose
    df = tagger.tag(["a GTK frontend for querying game servers"], k=5)   # id, rank, label, label_name, score

    for res in lmtx.iterate(out="runs/mine", rounds=3, candidates=5, teacher="qwen0.5b"):
        print(res.round, res.metrics.get("P@1"))

Inputs are file paths (JSONL, CSV, Parquet), lists of texts or dicts, pandas DataFrames, or Hugging Face
``datasets.Dataset`` objects; in-memory rows are checked like file lines, and a bad one is named by its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping

import pandas as pd

from .config import RunConfig, build_config
from .loop.job import RoundResult, Runtime
from .store.data import DataError, Doc, LabelSet, docs_of, labels_of, load_docs, load_labels

__all__ = ["Tagger", "iterate", "evaluate", "teacher", "RunConfig", "RoundResult", "as_docs", "as_labels"]


def _records(data, what: str) -> Iterator[tuple[str, dict]]:
    """(where, record) for in-memory rows: a DataFrame, a datasets.Dataset, or an iterable of dicts."""
    if hasattr(data, "to_pandas") and not isinstance(data, pd.DataFrame):  # a Hugging Face datasets.Dataset
        data = data.to_pandas()
    if isinstance(data, pd.DataFrame):
        for i, rec in enumerate(data.to_dict("records"), 1):
            yield f"<{what} DataFrame>:row {i}", rec
        return
    for i, rec in enumerate(data, 1):
        if not isinstance(rec, Mapping):
            raise DataError(
                f"<{what}>:row {i}: expected a mapping with the fields of a {what[:-1]}, got {type(rec).__name__}"
            )
        yield f"<{what}>:row {i}", dict(rec)


def as_docs(data, columns: Mapping[str, str] | None = None) -> list[Doc]:
    """Documents from a file path, a list of texts (ids "0", "1", ...), a list of dicts, a DataFrame or a
    datasets.Dataset. ``columns``: this data's column for id / text / labels, e.g. {"text": "body"}."""
    if isinstance(data, (str, Path)):
        return load_docs(data)
    rename = {v: k for k, v in (columns or {}).items()}
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return [Doc(str(i), t) for i, t in enumerate(data)]
    renamed = ((where, {rename.get(k, k): v for k, v in rec.items()}) for where, rec in _records(data, "docs"))
    docs = [d for _, d in docs_of(renamed)]
    if not docs:
        raise DataError("<docs>: no documents")
    return docs


def as_labels(data) -> LabelSet:
    """A label set from a file path, a LabelSet, a list of dicts (id, name[, description]) or a DataFrame, checked
    by the same rules as a label file (store.data.labels_of)."""
    if isinstance(data, LabelSet):
        return data
    if isinstance(data, (str, Path)):
        return load_labels(data)
    return labels_of(_records(data, "labels"))


class Tagger:
    """Tags documents with a trained encoder (or any sentence-transformers model) and a label set, ranking exactly as
    `lmtx tag` does: dense, lexical (BM25 over the label texts) or their fusion, as the run chose.

    Build one with ``Tagger.load``; no LLM is called.

        tagger = lmtx.Tagger.load("runs/demo")          # a run folder: its best round, label set and ranking
        df = tagger.tag(["an audio player for GNOME"], k=5)  # id, rank, label, label_name, score
        tagger.tag_file("docs.csv", "tags.parquet")      # streamed in resumable chunks, like `lmtx tag`

    The label index (and, for hybrid ranking, the BM25 index) is built on first use and cached under
    ``$LMTX_HOME``, so a second Tagger over the same model and labels starts at once. Labels the model never saw
    work as well (zero-shot): pass ``labels=`` to ``load``.
    """

    def __init__(self, model: str, labels: LabelSet, options):
        self.model, self.labels, self.options = model, labels, options
        self._ranker = None

    @classmethod
    def load(
        cls,
        model_or_run: str | Path,
        labels=None,
        retrieval: str = "auto",
        dense_weight: float | None = None,
        label_text: str | None = None,
        index: str = "auto",
    ) -> "Tagger":
        """``model_or_run``: a run folder (its best round, with the run's label set and retrieval settings), a round
        folder, or a sentence-transformers folder / asset name (then ``labels`` is required). ``labels``: a path, a
        LabelSet, a DataFrame or a list of dicts (default: the run's label file)."""
        from .evaluation.evaluate import run_record
        from .tag import TagOptions

        spec = str(model_or_run)
        if labels is None:
            _, cfg = run_record(spec)
            path = ((cfg or {}).get("loop") or {}).get("labels")
            if not path:
                raise DataError(f"{spec}: not a run folder with a label file; give labels=")
            labels = path
        opts = TagOptions(retrieval=retrieval, dense_weight=dense_weight, label_text=label_text, index_kind=index)
        return cls(spec, as_labels(labels), opts)

    def _rank(self):
        if self._ranker is None:
            from .evaluation.evaluate import resolve_retrieval
            from .tag import _ranker

            o = self.options
            self.how = resolve_retrieval(self.model, o.retrieval, o.dense_weight, o.label_text)
            self._ranker = _ranker(self.model, self.labels, o, self.how, lambda s: None)
        return self._ranker

    def tag(
        self, data, k: int = 5, columns: Mapping[str, str] | None = None, min_score: float | None = None
    ) -> pd.DataFrame:
        """The top-k labels of each document: columns id, rank (from 1), label, label_name, score (what
        `lmtx tag` writes, with doc_id as id and label_id as label). ``data``: see as_docs."""
        from dataclasses import replace

        from .tag import _tag_chunk

        docs = as_docs(data, columns)
        opts = replace(self.options, top_k=k, min_score=min_score)
        df = _tag_chunk(self._rank(), self.labels, docs, opts, None)
        return df.rename(columns={"doc_id": "id", "label_id": "label"})[
            ["id", "rank", "label", "label_name", "score"]
        ].reset_index(drop=True)

    def tag_file(self, docs: str | Path, out: str | Path, k: int = 5, engine=None, **options) -> dict:
        """Stream a documents file into ``out`` (.parquet, .jsonl, .csv) exactly like `lmtx tag` (chunked, resumable);
        ``options``: TagOptions fields (chunk_docs, min_score, shard, ...). Returns the summary `lmtx tag` prints."""
        from dataclasses import replace

        from .tag import tag

        opts = replace(self.options, top_k=k, **options)
        return tag(self.model, self.labels, docs, out, opts, progress=False, log=lambda s: None, engine=engine)


def iterate(
    config: RunConfig | str | Path | None = None,
    out: str | Path = "runs/demo",
    overrides: Mapping[str, object] | None = None,
    runtime: Runtime | None = None,
    **options,
) -> Iterator[RoundResult]:
    """The LMTX loop as a generator of rounds (what `lmtx iterate` prints a line for). ``config``: a RunConfig, or a
    TOML/JSON settings file; ``options``: `lmtx iterate`'s option names (rounds=3, candidates=5, teacher="qwen0.5b",
    docs=..., labels=...); ``overrides``: {"section.key": value}, applied last. Neither docs nor labels: the bundled
    sample. Rerunning with the same out resumes."""
    from .loop.run import iterate as run_loop

    if isinstance(config, RunConfig):
        base, file = config.to_dict(), None
    else:
        base, file = None, config
    cfg = build_config(file, [f"{k}={v}" for k, v in (overrides or {}).items()], options=options, base=base)
    return run_loop(cfg, out, runtime or Runtime(progress=False, log=lambda s: None))


def evaluate(
    model: str | Path | None,
    docs,
    labels,
    k: Iterable[int] = (1, 3, 5, 10),
    baseline: str | None = None,
    retrieval: str = "auto",
    dense_weight: float | None = None,
) -> dict:
    """P@k, R@k, nDCG@k and PSP@k of a model or run folder (or baseline="tfidf" / "bm25") on documents with gold
    labels, as `lmtx evaluate` computes them."""
    from .evaluation.evaluate import evaluate as run_eval

    ls = as_labels(labels)
    ds = load_docs(docs, ls) if isinstance(docs, (str, Path)) else as_docs(docs)
    return run_eval(
        str(model) if model is not None else None,
        ds,
        ls,
        tuple(k),
        baseline,
        retrieval=retrieval,
        dense_weight=dense_weight,
    )


def teacher(name: str = "qwen0.5b", prompt: str = "paper-desc", urls: list[str] | None = None, device: str = "cpu"):
    """A teacher by registry name (lmtx teacher list), hf:PATH or vllm:NAME, served at ``urls`` when given; its
    ``p_yes(pairs)`` takes (document, label name[, description]) tuples or dicts. Also ``lmtx.teacher(...)``."""
    from .teacher.registry import teacher_by_name

    return teacher_by_name(name, prompt, urls, device)
