"""`lmtx tag`: label a new, possibly larger-than-memory corpus with a trained encoder. No LLM needed.

The input is streamed in chunks; each chunk's results are written to ``OUT.parts/part-NNNNN.*``
atomically, so an interrupted run resumes at the first unfinished chunk. At the end the parts are
joined (streaming) into OUT (.parquet, .jsonl or .csv: doc_id, rank, label_id, label_name, score[, p_yes]).
The label index is built once per (model, label set) and reused from ``$LMTX_HOME/index/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from .config import setting
from .search.encoder import fingerprint_encoder as _fingerprint_encoder
from .search.encoder import fingerprint_labels as _fingerprint_labels
from .search.index import LabelIndex
from .store import drill
from .store.assets import sha256_file
from .store.data import Doc, LabelSet, is_xc_record, iter_docs, iter_records, stable_key
from .store.files import replacing
from .store.rundir import read_json, write_text

OUT_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".csv": "csv"}


class TagError(ValueError):
    pass


@dataclass
class TagOptions:
    """How `lmtx tag` ranks and writes (its command-line options are generated from these fields)."""

    top_k: int = setting(5, "Labels per document.", "top-k")
    min_score: float | None = setting(
        None,
        "Drop predictions scoring below this (the cosine for dense retrieval, the "
        "fused score for hybrid, BM25 for lexical).",
        "min-score",
    )
    chunk_docs: int = setting(4096, "Documents per streamed chunk (also the resume unit).", "chunk-docs")
    batch_size: int = setting(64, "Texts per batch when embedding.")
    label_text: str | None = setting(
        None, "name, description or name+description; unset: the run's, else name+description.", "label-text"
    )
    index_kind: str = setting("auto", "The label index: auto, hnsw or exact.", "index")
    ef_search: int = setting(100, "HNSW search-time beam width.")
    label_backend: str = setting(
        "auto",
        "Label encoding: torch, onnx-int8, torch-pool (LMTX_POOL_DEVICES), auto (onnx-int8 from 50,000 labels).",
        "label-backend",
    )
    shard: tuple[int, int] | None = setting(
        None,
        "(i, n): tag only the documents whose id hashes to i modulo n, so n "
        "processes or machines share a corpus, each writing its own output.",
    )
    retrieval: str = setting(
        "auto", "auto (a run folder's own choice; dense for a plain encoder), dense, lexical or hybrid.", "retrieval"
    )
    dense_weight: float | None = setting(
        None,
        "hybrid: the dense side's weight in [0, 1]; unset: the run's; else retrieval.dense_weight for a run, "
        "retrieval.zero_shot_weight for an encoder as fetched.",
        "dense-weight",
    )

    def __post_init__(self):
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise TagError(f"--shard must be I/N with 0 <= I < N, got {self.shard[0]}/{self.shard[1]}")
        from .config import INDEX_KINDS, LABEL_TEXTS, one_of
        from .search.fast_encode import BACKENDS

        if self.top_k < 1 or self.chunk_docs < 1 or self.batch_size < 1 or self.ef_search < 1:
            raise TagError("--top-k, --chunk-docs, the batch size and ef_search must be >= 1")
        if self.label_text is not None:
            one_of(self.label_text, LABEL_TEXTS, "--label-text", TagError)
        one_of(self.retrieval, ("auto", "dense", "lexical", "hybrid"), "--retrieval", TagError)
        if self.dense_weight is not None and not 0.0 <= self.dense_weight <= 1.0:
            raise TagError(f"--dense-weight must be in [0, 1] (1 = dense only), got {self.dense_weight}")
        one_of(self.index_kind, INDEX_KINDS, "--index", TagError)
        one_of(self.label_backend, BACKENDS, "--label-backend", TagError)


def label_index(
    model, model_path: str, labels: LabelSet, opts: TagOptions, log=print, label_text: str | None = None
) -> LabelIndex:
    """The label index for (model, label set), from the on-disk cache or built once and saved there."""
    from .config import IndexConfig
    from .search.encoder import label_embeddings
    from .search.fast_encode import resolve_backend
    from .search.index import build_index
    from .store.assets import lmtx_home

    label_text = label_text or opts.label_text
    key = f"{_fingerprint_encoder(model_path)}-{_fingerprint_labels(labels, label_text)}-{opts.index_kind}"
    if (backend := resolve_backend(model, opts.label_backend, len(labels))) != "torch":
        key += f"-{backend}"
    folder = lmtx_home() / "index" / key
    if (folder / "index.json").exists():
        idx = LabelIndex.load(folder)
        idx.ef_search = max(idx.ef_search, opts.ef_search)
        return idx
    log(f"[lmtx] building the label index for {len(labels)} labels (once; cached in {folder})")
    emb = label_embeddings(
        model, labels, label_text, opts.batch_size, cache_for=model_path, backend=opts.label_backend, log=log
    )
    idx = build_index(emb, IndexConfig(kind=opts.index_kind, ef_search=opts.ef_search), log=log)
    with replacing(folder, "write:label-index") as tmp:
        idx.save(tmp)
    return idx


def in_shard(doc_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a document belongs to shard (i, n): md5 of its id modulo n (stable across machines and runs)."""
    if shard is None:
        return True
    return stable_key(doc_id) % shard[1] == shard[0]


def iter_doc_chunks(path: str | Path, size: int, shard: tuple[int, int] | None = None) -> Iterator[list[Doc]]:
    """Documents (of the shard, if given) in chunks of ``size``; a document id seen earlier in the file is refused
    (file:line), whichever shard it falls in."""
    chunk: list[Doc] = []
    for _, d in iter_docs(path, chunk_rows=size):
        if not in_shard(d.id, shard):
            continue
        chunk.append(d)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_part(df: pd.DataFrame, path: Path, fmt: str):
    with replacing(path, "write:part") as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_csv(tmp, index=False)
    drill.point("tag:part")


def _join_parts(parts: list[Path], out: Path, fmt: str):
    with replacing(out, "write:tagged") as tmp:
        _join_into(parts, tmp, fmt)
    drill.point("tag:joined")


def _join_into(parts: list[Path], tmp: Path, fmt: str):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        for p in parts:
            t = pq.read_table(p)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t)
        if writer is None:
            pd.DataFrame(columns=["doc_id", "rank", "label_id", "label_name", "score"]).to_parquet(tmp, index=False)
        else:
            writer.close()
    else:
        with open(tmp, "wb") as dst:
            for i, p in enumerate(parts):
                with open(p, "rb") as src:
                    if fmt == "csv" and i > 0:
                        src.readline()  # header once
                    shutil.copyfileobj(src, dst, 1 << 20)


def tag(
    model_spec: str,
    labels: LabelSet,
    docs_path: str | Path,
    out: str | Path,
    opts: TagOptions,
    verify=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    engine=None,
) -> dict:
    """Tag every document of ``docs_path``; returns a summary (docs, rows, seconds, docs/s, resumed chunks).

    Chunks are written as parts next to ``out`` and joined at the end; a rerun after an interruption keeps the
    finished parts (only with the same input file, model, labels and options). ``engine``: a started
    lmtx.search.ray_engine.RayEngine tags on its cluster instead (see _tag_ray)."""
    from tqdm.auto import tqdm

    from .evaluation.evaluate import resolve_model, resolve_retrieval

    out = Path(out)
    fmt = OUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise TagError(f"{out}: output must end in .parquet, .jsonl or .csv")
    if not Path(docs_path).is_file():
        raise TagError(f"{docs_path}: no such file" if not Path(docs_path).exists() else f"{docs_path}: not a file")
    try:
        how = resolve_retrieval(model_spec, opts.retrieval, opts.dense_weight, opts.label_text)
    except ValueError as e:
        raise TagError(str(e)) from None
    model_path = resolve_model(model_spec)
    ranker = _ranker(model_spec, labels, opts, how, log)  # also builds the cached label index the actors load
    if engine is not None:
        return _tag_ray(engine, model_spec, labels, docs_path, out, fmt, opts, how, ranker.describe(), verify, log)
    parts_dir = _open_parts(out, docs_path, model_path, labels, opts, verify is not None, how)
    t0 = time.time()
    n_docs = n_rows = resumed = 0
    parts: list[Path] = []
    bar = tqdm(desc="tagging", unit="doc", disable=not progress)
    for ci, chunk in enumerate(iter_doc_chunks(docs_path, opts.chunk_docs, opts.shard)):
        part = parts_dir / f"part-{ci:05d}.{fmt}"
        parts.append(part)
        n_docs += len(chunk)
        if part.exists():
            resumed += 1
        else:
            df = _tag_chunk(ranker, labels, chunk, opts, verify)
            _write_part(df, part, fmt)
            n_rows += len(df)
        bar.update(len(chunk))
        bar.set_postfix(docs_per_s=f"{n_docs / max(1e-9, time.time() - t0):.0f}")
    bar.close()
    _join_parts(parts, out, fmt)
    shutil.rmtree(parts_dir)
    secs = time.time() - t0
    return {
        "docs": n_docs,
        "chunks": len(parts),
        "resumed_chunks": resumed,
        "seconds": secs,
        "docs_per_s": n_docs / secs if secs else None,
        "out": str(out),
        "retrieval": ranker.describe(),
    }


def _tag_ray(
    engine,
    model_spec,
    labels: LabelSet,
    docs_path,
    out: Path,
    fmt: str,
    opts: TagOptions,
    how: dict,
    described: str,
    verify,
    log,
) -> dict:
    """lmtx tag on Ray Data: the documents read by Ray, ranked by an actor pool (each actor loads the encoder, the
    label index lmtx cached and, for hybrid, the BM25 index, once), written by Ray as parquet parts, then joined into
    ``out`` with the local engine's columns and scores. Ray does not keep row order: the rows come grouped by
    document in the order Ray finished them. A failed or killed actor is replaced and its batch retried by Ray;
    the join then checks that every document came back exactly once."""

    if verify is not None or opts.shard is not None:
        raise TagError("--engine ray tags every document without --verify or --shard (run those on the local engine)")
    if is_xc_record(next(iter_records(docs_path), (None, {}))[1]):  # before reading the whole file
        raise TagError(
            f"{docs_path}: --engine ray reads id/text documents; this file is in the XC repository's layout (uid, "
            "title, content): tag it with --engine local, or convert it to JSONL with id and text first"
        )
    n_docs = sum(1 for _ in iter_docs(docs_path))  # lmtx's own reader first: a bad line is named (file:line)
    t0 = time.time()
    parts_dir = out.with_name(out.name + ".ray-parts")
    shutil.rmtree(parts_dir, ignore_errors=True)
    ds = _ray_read(docs_path).select_columns(["id", "text"])
    ds = ds.map_batches(
        _RankActor,
        fn_constructor_args=(model_spec, labels, opts, how),  # Ray puts them in its object store once
        batch_size=opts.chunk_docs,
        batch_format="pandas",
        compute=engine.pool(),
        num_cpus=1,
    )
    ds.write_parquet(str(parts_dir))
    parts = sorted(parts_dir.glob("*.parquet"))
    seen = _check_ray_parts(parts, n_docs, opts.top_k if opts.min_score is None else None)
    if fmt == "parquet":
        _join_parts(parts, out, fmt)
    else:
        with replacing(out, "write:tagged") as tmp, open(tmp, "wb") as f:
            for i, p in enumerate(parts):
                df = pd.read_parquet(p)
                if fmt == "jsonl":
                    f.write(df.to_json(orient="records", lines=True, force_ascii=False).encode())
                else:
                    f.write(df.to_csv(index=False, header=i == 0).encode())
    shutil.rmtree(parts_dir)
    secs = time.time() - t0
    log(f"[lmtx] tagged {seen} documents on Ray ({engine.actors} actor(s)) in {secs:.0f}s")
    return {
        "docs": n_docs,
        "chunks": len(parts),
        "resumed_chunks": 0,
        "seconds": secs,
        "docs_per_s": n_docs / secs if secs else None,
        "out": str(out),
        "retrieval": described,
        "engine": "ray",
    }


def _ray_read(path):
    """The documents file (or a folder of .jsonl / .csv / .parquet parts) as a Ray dataset."""
    import ray.data

    p = Path(path)
    files = sorted(x for x in p.iterdir() if x.is_file() and not x.name.startswith(".")) if p.is_dir() else [p]
    kinds = {x.suffix.lower() for x in files}
    if len(kinds) != 1:
        raise TagError(f"{path}: --engine ray reads one kind of file (.jsonl, .csv or .parquet), found {sorted(kinds)}")
    kind, names = kinds.pop(), [str(x) for x in files]
    if kind in (".jsonl", ".json"):
        return ray.data.read_json(names, lines=True)
    if kind == ".csv":
        import pyarrow.csv as pcsv

        # every column as a string, as lmtx's own reader takes them (ids like 007 stay 007)
        return ray.data.read_csv(
            names, convert_options=pcsv.ConvertOptions(strings_can_be_null=False, column_types={"id": "string"})
        )
    if kind == ".parquet":
        return ray.data.read_parquet(names)
    raise TagError(f"{path}: --engine ray reads .jsonl, .csv or .parquet documents, not {kind}")


def _check_ray_parts(parts: list[Path], n_docs: int, k: int | None) -> int:
    """Every document exactly once in Ray's parts (its top-k rows together, ranks 1..k), whatever retries did."""
    import pyarrow.parquet as pq

    docs: dict[str, int] = {}
    for p in parts:
        t = pq.read_table(p, columns=["doc_id"]).column(0).to_pylist()
        for d in t:
            docs[d] = docs.get(d, 0) + 1
    if len(docs) != n_docs or (k is not None and any(c != k for c in docs.values())):
        bad = sum(1 for c in docs.values() if k is not None and c != k)
        raise TagError(f"Ray returned {len(docs)} of {n_docs} documents ({bad} with a wrong number of rows); rerun")
    return len(docs)


class _RankActor:
    """A Ray actor: the ranking lmtx tag uses locally, built once; each batch of documents comes back as rows."""

    def __init__(self, model_spec: str, labels: LabelSet, opts: TagOptions, how: dict):
        import torch

        torch.set_num_threads(1)
        self.labels, self.opts = labels, opts
        self.ranker = _ranker(model_spec, labels, opts, how, lambda s: None)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        docs = [Doc(str(i), str(t)) for i, t in zip(batch["id"], batch["text"])]
        return _tag_chunk(self.ranker, self.labels, docs, self.opts, None)


def _ranker(model_spec: str, labels: LabelSet, opts: TagOptions, how: dict, log):
    """The ranking tag uses: the encoder's cached label index (HNSW or exact) and, unless dense, the labels' BM25."""
    from .evaluation.evaluate import make_ranker

    return make_ranker(
        model_spec,
        labels,
        how,
        batch_size=opts.batch_size,
        log=log,
        index_for=lambda model, path: label_index(model, path, labels, opts, log, how["label_text"]),
    )


def _open_parts(
    out: Path, docs_path, model_path: str, labels: LabelSet, opts: TagOptions, verify: bool, how: dict
) -> Path:
    """The folder of finished chunks beside ``out``; refuses one left by a run with other input or options."""
    parts_dir = out.with_name(out.name + ".parts")
    state = {
        "docs": str(Path(docs_path).resolve()),
        "model": _fingerprint_encoder(model_path),
        "labels": _fingerprint_labels(labels, how["label_text"]),
        "top_k": opts.top_k,
        "retrieval": [how["mode"], how["dense_weight"]]
        + ([how["standardize"]] if how["mode"] == "hybrid" else [])
        + ([how["hubness"]] if how.get("hubness") else [])
        + ([sha256_file(how["taught"])] if how.get("taught") else []),
        "min_score": opts.min_score,
        "chunk_docs": opts.chunk_docs,
        "verify": verify,
        "shard": list(opts.shard) if opts.shard else None,
        "docs_sha256": sha256_file(docs_path),
    }  # a resume must read the very same input
    state_file = parts_dir / "state.json"
    has_parts = parts_dir.exists() and any(parts_dir.glob("part-*"))
    if has_parts and state_file.exists():
        old = read_json(state_file)
        diff = sorted(k for k in set(old) | set(state) if old.get(k) != state.get(k))
        if diff:
            raise TagError(
                f"{parts_dir} holds the finished chunks of an unfinished run that differs in "
                f"{', '.join(diff)}"
                + (" (the input file changed)" if "docs_sha256" in diff else "")
                + f"; remove {parts_dir} to start over, or rerun with the same input and options"
            )
    write_text(state_file, json.dumps(state))
    return parts_dir


def _tag_chunk(ranker, labels: LabelSet, chunk: list[Doc], opts: TagOptions, verify) -> pd.DataFrame:
    """The top-k labels of each document of a chunk (rank from 1), above min_score, with P(yes) if verified."""
    idx, sim = ranker.rank([d.text for d in chunk], opts.top_k)
    k = idx.shape[1]
    df = pd.DataFrame(
        {
            "doc_id": np.repeat([d.id for d in chunk], k),
            "rank": np.tile(np.arange(1, k + 1), len(chunk)),
            "label_id": [labels[int(i)].id for i in idx.ravel()],
            "label_name": [labels[int(i)].name for i in idx.ravel()],
            "score": sim.ravel().astype(np.float32),
        }
    )
    if opts.min_score is not None:
        df = df[df["score"] >= opts.min_score]
    if verify is not None:
        df["p_yes"] = verify(chunk, df)
    return df


def make_verifier(teacher, template, labels: LabelSet, cache, describe: str = "yes"):
    """--verify: P(yes) of the teacher for each (doc, label) row, through the shared answer cache, asked in the
    teacher.describe form(s) ``describe`` (a run's: `lmtx tag` passes the one the run was trained with)."""
    from .teacher.base import Pair
    from .teacher.cache import score_described

    def verify(chunk: list[Doc], df: pd.DataFrame) -> list[float]:
        text = {d.id: d.text for d in chunk}
        pairs = []
        for d, l in zip(df["doc_id"], df["label_id"]):
            lab = labels[labels.index[l]]
            pairs.append(Pair(d, text[d], l, lab.name, lab.description))
        p_yes, _, _ = score_described(teacher, template, pairs, cache, describe)
        return [float(x) for x in p_yes]

    return verify


def calibrate(
    model_spec: str,
    labels: LabelSet,
    sample: list[Doc],
    top_k: int,
    opts: TagOptions | None = None,
    target_precision: float | None = None,
) -> dict:
    """Pick a score threshold on a small labelled sample: max F1, or the lowest one reaching a target precision.
    Reports the precision / recall that the threshold buys on the sample (rows = top-k predictions), ranked the way
    ``opts`` (retrieval, label text) tags."""
    from .evaluation.evaluate import make_ranker, resolve_retrieval

    opts = opts or TagOptions(top_k=top_k)
    sample = [d for d in sample if d.labels]
    if not sample:
        raise TagError("the calibration sample has no gold labels")
    try:
        how = resolve_retrieval(model_spec, opts.retrieval, opts.dense_weight, opts.label_text)
    except ValueError as e:
        raise TagError(str(e)) from None
    idx, sim = make_ranker(model_spec, labels, how).rank([d.text for d in sample], top_k)

    hit = np.array([[labels.ids[i] in set(d.labels) for i in row] for row, d in zip(idx, sample)])
    scores, hits = sim.ravel(), hit.ravel()
    n_gold = sum(len(d.labels) for d in sample)
    order = np.argsort(-scores)
    tp = np.cumsum(hits[order])
    prec = tp / np.arange(1, len(order) + 1)
    rec = tp / n_gold
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)
    if target_precision is not None:
        ok = np.nonzero(prec >= target_precision)[0]
        i = int(ok.max()) if len(ok) else 0
    else:
        i = int(f1.argmax())
    return {
        "threshold": float(scores[order][i]),
        "precision": float(prec[i]),
        "recall": float(rec[i]),
        "f1": float(f1[i]),
        "sample_docs": len(sample),
        "top_k": top_k,
        "rule": f"precision>={target_precision}" if target_precision is not None else "max F1",
    }
