"""The LMTX loop: embed -> retrieve -> ask the teacher -> select -> train, as a generator of rounds.

``iterate`` yields one RoundResult per round; the caller prints or logs. Every round's outputs are
written atomically and a round counts as finished only once its metrics and the manifest are written,
so rerunning the same command resumes after the last finished round (and mid-round through the
teacher cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from . import __version__
from .config import RunConfig
from .data import LabelSet, gold_of, load_docs, load_labels
from .encoder import embed, load_encoder
from .index import LabelIndex
from .metrics import evaluate_encoder, pseudo_label_quality
from .prompts import load_template
from .rundir import RunDir, save_encoder, write_json, write_parquet
from .select import decide, select_positives
from .teacher.base import Pair
from .teacher.cache import AnswerCache, score_cached


@dataclass
class RoundResult:
    round: int
    metrics: dict
    path: Path
    resumed: bool = False  # True: read back from a finished round, not recomputed


@dataclass
class Runtime:
    """Options that do not change results (not saved in config.json)."""

    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    teacher: object | None = None  # an already-built Teacher (tests, benchmarks)
    teacher_urls: list[str] = field(default_factory=list)  # served teacher replicas (OpenAI-compatible)
    teacher_tokenizer: str | None = None


def _template(cfg: RunConfig):
    t = cfg.teacher
    return load_template(t.prompt, t.prompt_file, t.max_doc_words)


def count_pairs(cfg: RunConfig, out: str | Path) -> dict:
    """What the teacher will be asked in round 1 (later rounds ask only pairs not cached yet)."""
    labels = load_labels(cfg.loop.labels)
    docs = load_docs(cfg.loop.docs, labels, cfg.loop.max_docs)
    j = min(cfg.index.candidates, len(labels))
    n = len(docs) * j
    return {"docs": len(docs), "labels": len(labels), "candidates": j, "pairs_per_round_max": n,
            "rounds": cfg.loop.rounds, "pairs_total_max": n * cfg.loop.rounds}


def _retrieve(model, docs, labels: LabelSet, cfg: RunConfig, progress: bool):
    lemb = embed(model, [l.text(cfg.encoder.label_text) for l in labels.labels], cfg.encoder.batch_size)
    demb = embed(model, [d.text for d in docs], cfg.encoder.batch_size, progress, "embedding docs")
    index = LabelIndex.from_config(lemb, cfg.index, cfg.loop.seed)
    idx, sim = index.query(demb, cfg.index.candidates)
    return idx, sim


def _teach(teacher, template, docs, labels: LabelSet, idx, sim, cache, rt: Runtime, r: int):
    from tqdm.auto import tqdm

    pairs, rows = [], []
    for di, (ls, ss) in enumerate(zip(idx, sim)):
        d = docs[di]
        for rank, (li, s) in enumerate(zip(ls, ss)):
            lab = labels[int(li)]
            pairs.append(Pair(d.id, d.text, lab.id, lab.name, lab.description))
            rows.append((di, int(li), rank, float(s)))
    bar = tqdm(total=len(pairs), desc=f"round {r}: teacher", unit="pair", disable=not rt.progress)
    t0 = time.time()
    answers, asked = score_cached(teacher, template.hash, pairs, cache, progress=bar.update)
    bar.close()
    secs = time.time() - t0
    j = pd.DataFrame(rows, columns=["doc", "label", "rank", "similarity"])
    j["p_yes"] = [a.p_yes for a in answers]
    j["mass"] = [a.mass for a in answers]
    return j, asked, secs


def iterate(cfg: RunConfig, out: str | Path, rt: Runtime | None = None) -> Iterator[RoundResult]:
    rt = rt or Runtime()
    log = rt.log
    if not rt.progress:
        _quiet_libraries()
    run = RunDir(out)
    run.prepare(cfg.to_dict())
    labels = load_labels(cfg.loop.labels)
    docs = load_docs(cfg.loop.docs, labels, cfg.loop.max_docs)
    eval_docs = load_docs(cfg.loop.eval_docs, labels) if cfg.loop.eval_docs else docs
    gold = gold_of(docs)
    template = _template(cfg)
    label_texts = [l.text(cfg.encoder.label_text) for l in labels.labels]
    doc_texts = [d.text for d in docs]
    doc_ids = [d.id for d in docs]
    has_gold = any(d.labels for d in eval_docs)

    done = run.finished_rounds()
    for r in done:
        if r <= cfg.loop.rounds:
            import json

            yield RoundResult(r, json.loads((run.round_dir(r) / "metrics.json").read_text()), run.round_dir(r), True)

    if 0 not in done:
        model0 = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length, rt.device, log)
        m = {"round": 0, "encoder": cfg.encoder.model}
        if has_gold:
            m.update(evaluate_encoder(model0, eval_docs, labels, cfg.encoder.label_text, show_progress=rt.progress))
        write_json(run.round_dir(0) / "metrics.json", m)
        run.finish_round(0, m, {"lmtx_version": __version__})
        yield RoundResult(0, m, run.round_dir(0))

    start = max([r for r in done if r > 0], default=0) + 1
    if start > cfg.loop.rounds:
        return

    teacher = rt.teacher
    if teacher is None:
        from .teacher.registry import make_teacher

        teacher = make_teacher(cfg.teacher.name, template, gold=gold, seed=cfg.loop.seed,
                               prefix_reuse=cfg.teacher.prefix_reuse, batch_size=cfg.teacher.batch_size,
                               device=rt.device, threads=rt.threads, progress=log, urls=rt.teacher_urls,
                               tokenizer=rt.teacher_tokenizer)
    log(f"[lmtx] teacher: {teacher.describe()}")
    if teacher.simulated:
        log("[lmtx] NOTE: SIMULATED teacher (answers from gold labels): a research tool, not a real result")
    cache = AnswerCache(run.cache_path)
    prev = run.last_encoder() or cfg.encoder.model
    model = load_encoder(str(prev), cfg.encoder.max_seq_length, rt.device, log)

    try:
        for r in range(start, cfg.loop.rounds + 1):
            rd = run.round_dir(r)
            rd.mkdir(parents=True, exist_ok=True)
            times = {}
            t0 = time.time()
            idx, sim = _retrieve(model, docs, labels, cfg, rt.progress)
            times["retrieve"] = time.time() - t0
            write_parquet(rd / "candidates.parquet", pd.DataFrame({
                "doc_id": np.repeat(doc_ids, idx.shape[1]),
                "rank": np.tile(np.arange(idx.shape[1]), len(docs)),
                "label_id": [labels[int(i)].id for i in idx.ravel()],
                "similarity": sim.ravel(),
            }))

            judged, asked, times["teacher"] = _teach(teacher, template, docs, labels, idx, sim, cache, rt, r)
            judged["yes"] = decide(judged, cfg.teacher.decision)
            # how much the teacher agrees with the current encoder's top-1 (label-free; drives --early-stop)
            top1 = float(judged.loc[judged["rank"] == 0, "p_yes"].mean())
            prev_top1 = run.manifest().get("teacher_top1_p_yes", {})
            if cfg.loop.early_stop and str(r - 1) in prev_top1 and top1 <= prev_top1[str(r - 1)]:
                best = r - 2 if top1 < prev_top1[str(r - 1)] else r - 1
                log(f"[lmtx] early stop: the teacher's mean P(yes) on the top-1 candidates of round {r - 1}'s encoder "
                    f"({top1:.4f}) did not rise above round {r - 2}'s ({prev_top1[str(r - 1)]:.4f}); best round: {best}")
                run.set_manifest(stopped_early={"at_round": r, "best_round": best})
                return
            run.set_manifest(teacher_top1_p_yes={**prev_top1, str(r): top1})
            examples = select_positives(judged, cfg.select.strategy)
            write_parquet(rd / "judgments.parquet", pd.DataFrame({
                "doc_id": [doc_ids[i] for i in judged["doc"]],
                "label_id": [labels[int(i)].id for i in judged["label"]],
                "rank": judged["rank"], "similarity": judged["similarity"], "p_yes": judged["p_yes"],
                "mass": judged["mass"], "yes": judged["yes"],
                "teacher": teacher.model_id, "simulated": teacher.simulated,
            }))

            t0 = time.time()
            if cfg.train.start == "init" and r > 1:
                model = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length, rt.device, log)
            tlog = train_round(model, doc_texts, label_texts, examples, cfg.train, cfg.loop.seed + r, rt.progress)
            times["train"] = time.time() - t0
            save_encoder(model, rd / "encoder")

            t0 = time.time()
            m: dict = {"round": r, "teacher": teacher.model_id, "simulated": teacher.simulated,
                       "decision": cfg.teacher.decision, "prompt": template.name}
            if has_gold:
                m.update(evaluate_encoder(model, eval_docs, labels, cfg.encoder.label_text))
            m.update(pseudo_label_quality(judged, examples, doc_ids, labels.ids, gold))
            times["evaluate"] = time.time() - t0
            m.update({
                "pairs_total": len(judged), "pairs_asked": asked, "teacher_top1_p_yes": top1,
                "teacher_pairs_per_s": asked / times["teacher"] if asked and times["teacher"] > 0 else None,
                "docs_with_yes": len({e.doc for e in examples}), "docs": len(docs),
                "train": tlog, "seconds": {k: round(v, 2) for k, v in times.items()},
            })
            write_json(rd / "metrics.json", m)
            run.finish_round(r, {k: m.get(k) for k in ("P@1", "P@5", "nDCG@5", "pairs_asked")},
                             {"teacher": teacher.describe(), "simulated": teacher.simulated,
                              "lmtx_version": __version__})
            yield RoundResult(r, m, rd)
    finally:
        cache.close()


def _quiet_libraries():
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()


def train_round(*a, **kw):
    from .train import train_round as _t

    return _t(*a, **kw)


def summary_line(res: RoundResult) -> str:
    m = res.metrics
    parts = [f"round {res.round}"]
    for k in ("P@1", "P@5", "nDCG@5"):
        if k in m:
            parts.append(f"{k} {m[k]:.3f}")
    if "pseudo_positive_precision" in m:
        parts.append(f"pseudo-pos precision {m['pseudo_positive_precision']:.2f}")
    if "pairs_asked" in m:
        parts.append(f"asked {m['pairs_asked']}/{m['pairs_total']} pairs")
    if "docs_with_yes" in m:
        parts.append(f"{m['docs_with_yes']}/{m['docs']} docs taught")
    if "seconds" in m:
        parts.append(f"{sum(m['seconds'].values()):.0f}s")
    if m.get("simulated"):
        parts.append("[SIMULATED teacher]")
    if res.resumed:
        parts.append("(finished earlier)")
    return " | ".join(parts)
