"""The LMTX loop: embed -> retrieve -> ask the teacher -> select -> train, as a generator of rounds.

``iterate`` yields one RoundResult per round; the caller prints or logs. A round is a chain of steps, each a
function of what the steps before it returned (see ``_round``); what carries to the next round is a new ``State``.
Every round's outputs are written atomically and a round counts as finished only once its metrics and the manifest
are written, so rerunning the same command resumes after the last finished round (and mid-round through the
teacher cache).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..config import LARGE_LABEL_SET, RunConfig
from ..evaluation.metrics import pseudo_label_quality
from ..learn.fuse import fuse, teacher_weaker
from ..learn.select import Example, decide, select_positives
from ..search.encoder import embed, load_encoder
from ..search.hybrid import Pools, hubness_file, mode_of, save_taught
from ..store.rundir import (
    peak_rss_gb,
    process_memory_gb,
    read_json,
    read_parquet,
    save_encoder,
    write_json,
    write_parquet,
)
from ..teacher.cache import AnswerCache, Asked
from ..version import __version__
from . import guard
from .cascade import Cascade, cascade
from .job import Job, RoundResult, Runtime, cosines, open_job
from .score import score_encoder

__all__ = ["RoundResult", "Runtime", "iterate"]


@dataclass(frozen=True)
class State:
    """What carries from one round to the next (rebuilt from the run folder on resume)."""

    model: object  # the best encoder so far: it retrieves, is guarded and is handed out (trained in place next round)
    lemb: np.ndarray  # its label embeddings
    best_round: int
    union: frozenset | None  # (doc index, label index) judged in any round so far; None: select.union off
    strong_docs: frozenset = frozenset()  # documents the strong teacher judges
    strong_spent: int = 0
    opt_state: dict = field(default_factory=dict)  # AdamW state of the best round (train.carry_optimizer)
    # train.merge_init > 0: the best round's unmerged weights, which training goes on from (``model`` is then their
    # merge with the initial encoder); None: training goes on from ``model``
    chain: object = None
    weight: float | None = None  # the best round's dense weight (retrieval.mode); None: not chosen yet


@dataclass(frozen=True)
class Candidates:
    demb: np.ndarray  # the training documents' embeddings (by the best encoder)
    idx: np.ndarray  # each document's candidate label indices
    pools: Pools  # each document's dense and lexical top labels
    weight: float  # the dense weight the candidates were ranked at
    penalty: np.ndarray | None = None  # the best encoder's hubness penalty per label (retrieval.hubness; None: off)


@dataclass(frozen=True)
class GuardReference:
    """The best encoder's guard score and dense weight, rated before training (each once per encoder)."""

    scores: dict  # encoder round -> guard score (the manifest's, with the best encoder's added)
    choices: dict  # encoder round -> its label-free retrieval choice (the manifest's, likewise)
    rows: list  # guard rows rated now
    asked: Asked
    weight: float  # the dense weight the round's student view and the run's ranking use


@dataclass(frozen=True)
class Trained:
    model: object  # the encoder this round hands out (merged with the initial one under train.merge_init)
    chain: object  # the unmerged weights (train.merge_init), else None
    lemb: np.ndarray
    opt_state: dict | None
    log: dict  # train_round's record


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str
    scores: dict  # the reference's scores with this round's
    choices: dict  # the reference's choices with this round's
    asked: Asked  # guard pairs and prompts asked this round (reference included)


class Clock:
    """Each step's wall time and this process's memory after it (a round's "seconds" and "memory_gb_after_step")."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.memory: dict[str, dict] = {}

    @contextmanager
    def __call__(self, step: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.times[step] = self.times.get(step, 0.0) + time.time() - t0
            self.note(step)

    def note(self, name: str) -> None:
        if (mem := process_memory_gb()) is not None:
            self.memory[name] = mem


def iterate(cfg: RunConfig, out: str | Path, rt: Runtime | None = None) -> Iterator[RoundResult]:
    rt = rt or Runtime()
    if not rt.progress:
        _quiet_libraries()
    job, model0 = open_job(cfg, out, rt)
    cfg, run = job.cfg, job.run  # job.cfg: a resumed run's legacy settings kept (config.keep_legacy)
    done = run.finished_rounds()
    for r in done:
        if r <= cfg.loop.rounds:
            yield RoundResult(r, read_json(run.round_dir(r) / "metrics.json"), run.round_dir(r), True)
    if 0 not in done:
        yield _round_zero(job, model0)
    start = max([r for r in done if r > 0], default=0) + 1
    if start > cfg.loop.rounds or run.manifest().get("stopped_early"):
        return
    _start_teachers(job)
    job.cache = AnswerCache(run.cache_path)
    st = _resume_state(job)
    try:
        for r in range(start, cfg.loop.rounds + 1):
            res, st = _round(r, st, job)
            yield res
            if cfg.loop.early_stop and not res.metrics.get("promoted", True):
                rt.log(f"[lmtx] early stop: round {r} was not better than round {st.best_round} (--early-stop)")
                run.set_manifest(stopped_early={"at_round": r, "best_round": st.best_round})
                return
    finally:
        job.cache.close()


def _round(r: int, st: State, job: Job) -> tuple[RoundResult, State]:
    """One round: retrieve -> teach (+ cascade) -> fuse -> select -> train -> guard -> promote -> evaluate."""
    rd = job.run.round_dir(r)
    rd.mkdir(parents=True, exist_ok=True)
    clock, stats0 = Clock(), dict(getattr(job.teacher, "stats", {}))
    with clock("guard"):
        ref = _guard_reference(job, st, r)
    with clock("retrieve"):
        cands = _retrieve(job, st, rd, ref.weight)
    with clock("teacher"):
        judged, asked = _teach(job, st, cands, ref.weight, r)
    fused, views, casc = _fuse(job, st, judged, r, clock)
    judged, examples = _select(job, fused, r, rd)
    with clock("train"):
        trained = _train(job, st, examples, r, rd, clock)
    with clock("guard"):
        verdict = _guard(job, st, trained, ref, r, rd)
    nxt = _promote(job, st, r, trained, verdict, ref, judged, casc)
    with clock("evaluate"):
        m = _evaluate(job, r, st.best_round, nxt, trained, verdict, judged, examples)
    m["candidate_weight"] = cands.weight
    res = _record(job, r, rd, nxt, m, judged, examples, trained, verdict, views, casc, asked, clock, stats0)
    return res, nxt


def _retrieve(job: Job, st: State, rd: Path, weight: float) -> Candidates:
    """1. This round's candidates, retrieved with the best encoder so far (written to candidates.parquet): the top-j
    of the fused ranking at retrieval.candidate_weight, else at ``weight``, the one the run ranks that encoder with."""
    cfg = job.cfg
    demb = embed(st.model, job.doc_texts, cfg.encoder.batch_size, job.rt.progress, "embedding docs")
    penalty = job.penalty(st.lemb, st.model, demb)
    dense = job.retrieve(st.lemb, demb, cfg.retrieval.pool)  # searched once: both rankings below pool from it
    # the run's ranking: the student's view
    pools = job.pools(st.lemb, demb, "train", job.doc_texts, penalty=penalty, dense=dense)
    ch = cfg.retrieval.candidate_hubness
    cand_pools = pools
    if ch is not None and ch != cfg.retrieval.hubness:  # the candidates' own penalty
        cand_penalty = job.penalty(st.lemb, st.model, demb, ch)
        cand_pools = job.pools(st.lemb, demb, "train", job.doc_texts, penalty=cand_penalty, dense=dense)
    if cfg.retrieval.candidate_weight is not None:
        weight = cfg.retrieval.candidate_weight
    idx, score = cand_pools.rank(weight, cfg.index.candidates)
    sim = cosines(demb, st.lemb, idx)
    write_parquet(
        rd / "candidates.parquet",
        pd.DataFrame(
            {
                "doc_id": np.repeat(job.doc_ids, idx.shape[1]),
                "rank": np.tile(np.arange(idx.shape[1]), len(job.docs)),
                "label_id": [job.labels[int(i)].id for i in idx.ravel()],
                "similarity": sim.ravel(),
                "retrieval_score": score.ravel(),  # the fused score at the candidates' weight (the cosine at 1)
            }
        ),
    )
    return Candidates(demb, idx, pools, weight, penalty)


def _guard_reference(job: Job, st: State, r: int) -> GuardReference:
    """2a. The best encoder's guard score and, with retrieval.mode auto, its dense weight (each once per encoder,
    then kept in the manifest)."""
    man = job.run.manifest()
    scores, choices = dict(man.get("guard", {})), dict(man.get("retrieval_choice", {}))
    b = str(st.best_round)
    need_ref = bool(job.guard_docs) and b not in scores
    need_choice = bool(job.guard_docs) and job.cfg.retrieval.mode == "auto" and b not in choices
    rows, asked = [], Asked()
    if need_ref or need_choice:
        rating = guard.rate(job, st.model, st.lemb, r, st.best_round)
        asked = rating.asked
        if need_ref:
            scores[b], rows = rating.score, rating.rows
        if rating.choice:
            choices[b] = rating.choice
    return GuardReference(scores, choices, rows, asked, guard.weight_of(job.cfg, choices.get(b)))


def _teach(job: Job, st: State, cands: Candidates, weight: float, r: int) -> tuple[pd.DataFrame, Asked]:
    """2b. The teacher's answers (only what the cache lacks) on the candidates joined to earlier rounds' pairs; each
    pair's cosine, BM25 score and the student's view (the two fused at the best encoder's dense weight). Returns
    the judged pairs and how many the teacher was asked."""
    cand = {(int(d), int(l)) for d, row in enumerate(cands.idx) for l in row}
    keys = sorted((st.union | cand) if st.union is not None else cand)
    j = pd.DataFrame(keys, columns=["doc", "label"])
    p, mass, asked = job.ask(job.teacher, job.docs, j["doc"], j["label"], f"round {r}: teacher")
    j["p_yes"], j["mass"] = p, mass
    j["candidate"] = [k in cand for k in keys]
    d, lab = j["doc"].to_numpy(), j["label"].to_numpy()
    j["similarity"] = np.einsum("ij,ij->i", cands.demb[d], st.lemb[lab])
    j["lexical"] = job.lexical.pair_scores(job.doc_texts, d, lab)
    dense = j["similarity"].to_numpy() - (cands.penalty[lab] if cands.penalty is not None else 0.0)
    j["student"] = dense if weight >= 1.0 else cands.pools.pair(d, dense, j["lexical"].to_numpy(), weight)
    j["rank"] = j.groupby("doc")["similarity"].rank(ascending=False, method="first").astype(int) - 1
    return j, asked


def _fuse(job: Job, st: State, j: pd.DataFrame, r: int, clock: Clock) -> tuple[pd.DataFrame, dict, Cascade]:
    """3. Fuse teacher and student; ask the strong teacher where they disagree most (cascade), and fuse again with
    its answers; warn when the teacher looks weaker than the student. Returns the judged pairs with p_teacher and
    fused, the label-free view estimates, and the cascade's outcome."""
    j, views = _fused(job, j)
    casc = Cascade(None, st.strong_docs, st.strong_spent, 0)
    if job.strong is not None:
        with clock("strong_teacher"):
            casc = cascade(job, j, st.strong_docs, st.strong_spent, r)
        if casc.p_strong is not None:
            j, views = _fused(job, j.assign(p_strong=casc.p_strong))
    if teacher_weaker(views.get("teacher")):
        from ..teacher.registry import strongest_offline

        v, best = views["teacher"], strongest_offline()
        fix = (
            "fewer rounds would help"
            if best in (job.cfg.teacher.name, job.cfg.teacher.strong)
            else f"a stronger teacher (--teacher {best}, or --strong-teacher {best} --strong-budget N) or fewer rounds "
            "would help"
        )
        job.rt.log(
            f"[lmtx] warning: round {r}: the student may rank the candidates better than the teacher "
            f"(label-free estimate r {v['r_student']:.2f} vs {v['r_teacher']:.2f}; it leans toward the student "
            f"and has misfired against strong teachers, see docs/training.md); {fix}."
        )
    return j, views, casc


def _fused(job: Job, j: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Fused scores (teacher + student), separately for the documents the strong teacher judged."""
    has_strong = "p_strong" in j
    j = j.assign(p_teacher=j["p_strong"].fillna(j["p_yes"]) if has_strong else j["p_yes"], fused=0.0)
    views = {}
    groups = [("teacher", j["p_strong"].isna().to_numpy() if has_strong else np.ones(len(j), bool))]
    if has_strong and j["p_strong"].notna().any():
        groups.append(("strong", j["p_strong"].notna().to_numpy()))
    for name, sel in groups:
        if not sel.any():
            continue
        f, q = fuse(
            j[sel],
            job.doc_texts,
            job.label_texts,
            job.cfg.select.fusion,
            teacher_col="p_teacher",
            student_col="student",
        )
        j.loc[sel, "fused"] = f
        views[name] = q.to_dict()
    return j, views


def _select(job: Job, j: pd.DataFrame, r: int, rd: Path) -> tuple[pd.DataFrame, list[Example]]:
    """4. Decide yes/no and select pseudo-positives (on the strong teacher's answers where the cascade asked it);
    the round's judgments go to judgments.parquet."""
    cfg, labels = job.cfg, job.labels
    by_teacher = j.assign(p_yes=j["p_teacher"])
    j = j.assign(yes=decide(by_teacher, cfg.teacher.decision))
    examples = select_positives(j.assign(p_yes=j["p_teacher"]), cfg.select.strategy)
    out = {"doc_id": [job.doc_ids[i] for i in j["doc"]], "label_id": [labels[int(i)].id for i in j["label"]]}
    cols = ["rank", "similarity", "lexical", "student", "p_yes", "mass", "yes", "fused", "candidate"] + (
        ["p_strong"] if "p_strong" in j else []
    )
    write_parquet(
        rd / "judgments.parquet",
        pd.DataFrame(
            {
                **out,
                **{c: j[c].to_numpy() for c in cols},
                "teacher": job.teacher.model_id,
                "simulated": job.teacher.simulated,
            }
        ),
    )
    if (taught := job.taught(r)) is not None:  # the labels taught so far, for lmtx tag --model RUN
        save_taught(rd, taught, labels)
    return j, examples


def _train(job: Job, st: State, examples: list[Example], r: int, rd: Path, clock: Clock) -> Trained:
    """5. Train (from the best encoder, in place, or with --start init from the initial one), save, encode the
    labels with the result."""
    from ..learn.train import merge_weights, train_round

    cfg, rt = job.cfg, job.rt
    model, chain = st.model, st.chain
    if cfg.train.start == "init" and r > 1:
        m0 = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length, rt.device, rt.log)
        if chain is None:
            model = m0
        else:
            chain = m0
    opt_state = dict(st.opt_state) if cfg.train.carry_optimizer and cfg.train.start == "warm" else None
    log = train_round(
        model if chain is None else chain,
        job.doc_texts,
        job.label_texts,
        examples,
        cfg.train,
        cfg.loop.seed + r,
        rt.progress,
        opt_state=opt_state,
    )
    if chain is not None:  # train.merge_init: keep the trained weights, hand out their merge with the initial
        save_encoder(chain, job.run.trained_dir(r))
        merge_weights(model, job.init_weights, chain, cfg.train.merge_init)
    save_encoder(model, rd / "encoder")
    if opt_state is not None and opt_state.get("adamw"):
        job.run.save_optimizer(r, opt_state["adamw"])
    clock.note("train (before the label encoding)")
    return Trained(model, chain, job.label_emb(model, str(rd / "encoder")), opt_state, log)


def _guard(job: Job, st: State, trained: Trained, ref: GuardReference, r: int, rd: Path) -> Verdict:
    """6. The guard: this round's encoder is promoted only if it is not worse than the best so far, nor than the
    initial encoder."""
    if not job.guard_docs:
        return Verdict(True, "no guard (loop.guard_docs = 0)", ref.scores, ref.choices, ref.asked)
    rating = guard.rate(job, trained.model, trained.lemb, r, r)
    write_parquet(
        rd / "guard.parquet",
        pd.DataFrame(ref.rows + rating.rows, columns=["encoder_round", "doc_id", "label_id", "p_yes"]),
    )
    scores = ref.scores | {str(r): rating.score}
    choices = ref.choices | ({str(r): rating.choice} if rating.choice else {})
    promoted, reason = guard.verdict(job, r, st.best_round, scores)
    return Verdict(promoted, reason, scores, choices, ref.asked + rating.asked)


def _promote(
    job: Job,
    st: State,
    r: int,
    trained: Trained,
    verdict: Verdict,
    ref: GuardReference,
    judged: pd.DataFrame,
    casc: Cascade,
) -> State:
    """7. The next round's state: this round's encoder if promoted, else the best one so far (reloaded: training
    changed the object in place)."""
    union = frozenset(zip(judged["doc"].astype(int), judged["label"].astype(int))) if job.cfg.select.union else None
    carried = {"union": union, "strong_docs": casc.docs, "strong_spent": casc.spent}
    if verdict.promoted:
        opt = trained.opt_state if trained.opt_state is not None and trained.opt_state.get("adamw") else st.opt_state
        return replace(
            st,
            model=trained.model,
            chain=trained.chain,
            lemb=trained.lemb,
            best_round=r,
            opt_state=opt,
            weight=guard.weight_of(job.cfg, verdict.choices.get(str(r))),
            **carried,
        )
    job.rt.log(f"[lmtx] round {r} not promoted: {verdict.reason}; kept on disk, the best stays round {st.best_round}")
    model = job.load_round(st.best_round)
    chain = job.load_chain(st.best_round, model) if trained.chain is not None else None
    return replace(st, model=model, chain=chain, weight=ref.weight, **carried)


def _evaluate(
    job: Job,
    r: int,
    prev_best: int,
    nxt: State,
    trained: Trained,
    verdict: Verdict,
    judged: pd.DataFrame,
    examples: list[Example],
) -> dict:
    """8. The round's own encoder against gold (reported, never used) and the pseudo-labels' quality; with
    train.merge_init, also the unmerged weights (``unmerged``: what the merge changed) where labels are few."""
    cfg = job.cfg
    m: dict = {
        "round": r,
        "teacher": job.teacher.model_id,
        "simulated": job.teacher.simulated,
        "decision": cfg.teacher.decision,
        "prompt": job.template.name,
        "select": cfg.select.strategy,
        "fusion": cfg.select.fusion,
        "merge_init": cfg.train.merge_init,
    }
    if job.has_gold:
        m.update(
            score_encoder(
                job,
                trained.model,
                trained.lemb,
                weight=guard.weight_of(cfg, verdict.choices.get(str(r))),
                taught=job.taught(r),
            )
        )
        if trained.chain is not None and len(job.labels) < LARGE_LABEL_SET:
            lemb = embed(trained.chain, job.label_texts, cfg.encoder.batch_size)
            m["unmerged"] = {
                k: v for k, v in score_encoder(job, trained.chain, lemb).items() if k in ("P@1", "P@5", "nDCG@5")
            }
        best_m = m if verdict.promoted else read_json(job.run.round_dir(prev_best) / "metrics.json")
        m["best"] = {k: best_m.get(k) for k in ("round", "P@1", "P@3", "P@5", "nDCG@5")} | {"round": nxt.best_round}
        if (fin := best_m.get("retrieval", {}).get("final")) is not None:
            m["best"]["final"] = fin
    m.update(pseudo_label_quality(judged, examples, job.doc_ids, job.labels.ids, job.gold))
    if job.gold:
        old = select_positives(judged.assign(p_yes=judged["p_teacher"]), "similarity")
        m["pseudo_positive_precision_teacher_only"] = pseudo_label_quality(
            judged, old, job.doc_ids, job.labels.ids, job.gold
        ).get("pseudo_positive_precision")
    return m


def _record(
    job: Job,
    r: int,
    rd: Path,
    nxt: State,
    m: dict,
    judged: pd.DataFrame,
    examples: list[Example],
    trained: Trained,
    verdict: Verdict,
    views: dict,
    casc: Cascade,
    asked: Asked,
    clock: Clock,
    stats0: dict,
) -> RoundResult:
    """9. The round's metrics.json, then the manifest: only now does the round count as finished."""
    teacher = job.teacher
    t = clock.times
    secs = t.get("teacher", 0)
    m.update(
        {
            "pairs_total": len(judged),
            "pairs_candidates": int(judged["candidate"].sum()),
            "pairs_asked": asked.pairs,  # pairs whose answer was not in the cache
            "prompts_asked": asked.prompts,  # two a pair under teacher.describe both
            "strong_pairs_asked": casc.asked,
            "strong_docs": len(nxt.strong_docs),
            "guard_pairs_asked": verdict.asked.pairs,
            "guard_prompts_asked": verdict.asked.prompts,
            "teacher_pairs_per_s": asked.pairs / secs if asked.pairs and secs > 0 else None,
            "teacher_prompts_per_s": asked.prompts / secs if asked.prompts and secs > 0 else None,
            "views": views,
            "teacher_weaker": teacher_weaker(views.get("teacher")),
            "retrieval_choice": verdict.choices.get(str(r)),
            "teacher_stats": {k: v - stats0.get(k, 0) for k, v in getattr(teacher, "stats", {}).items()},
            "guard": {
                "promoted": verdict.promoted,
                "reason": verdict.reason,
                "score": verdict.scores.get(str(r)),
                "best_round": nxt.best_round,
                "docs": len(job.guard_docs),
            },
            "promoted": verdict.promoted,
            "best_round": nxt.best_round,
            "docs_with_yes": len({e.doc for e in examples}),
            "docs": len(job.docs),
            "train": trained.log,
            "seconds": {k: round(v, 2) for k, v in t.items()},
            "peak_rss_gb": peak_rss_gb(),
            "memory_gb_after_step": clock.memory,
        }
    )
    save_hubness(job, rd, trained.lemb, trained.model)
    write_json(rd / "metrics.json", m)
    summary = {k: m.get(k) for k in ("P@1", "P@5", "nDCG@5", "pairs_asked", "promoted")}
    if (fin := m.get("retrieval", {}).get("final")) is not None:
        summary["final_P@1"] = fin["P@1"]
    job.run.finish_round(
        r,
        summary,
        {
            "teacher": teacher.describe(),
            "simulated": teacher.simulated,
            "lmtx_version": __version__,
            "best_round": nxt.best_round,
            "guard": verdict.scores,
            "strong_pairs_asked": nxt.strong_spent,
            "retrieval_choice": verdict.choices,
            "retrieval": run_retrieval(job.cfg, nxt.best_round, nxt.weight),
        },
    )
    # only now: a run killed before this line resumes from the previous best round's optimizer state and weights
    job.run.drop_training_state(keep=nxt.best_round)
    return RoundResult(r, m, rd)


def _round_zero(job: Job, model0) -> RoundResult:
    """Round 0: the initial encoder, evaluated (where gold exists) and recorded."""
    cfg, run = job.cfg, job.run
    model0 = model0 or load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length, job.rt.device, job.rt.log)
    m = {"round": 0, "encoder": cfg.encoder.model, "train_docs": len(job.docs), "guard_docs": len(job.guard_docs)}
    fixed = None if cfg.retrieval.mode == "auto" else guard.weight_of(cfg, None)  # auto: chosen in round 1
    lemb0 = None
    if job.has_gold:
        lemb0 = job.label_emb(model0, cfg.encoder.model)
        m.update(score_encoder(job, model0, lemb0, show_progress=job.rt.progress, weight=fixed))
    if cfg.retrieval.hubness > 0:
        save_hubness(
            job, run.round_dir(0), lemb0 if lemb0 is not None else job.label_emb(model0, cfg.encoder.model), model0
        )
    m["peak_rss_gb"] = peak_rss_gb()
    write_json(run.round_dir(0) / "metrics.json", m)
    run.finish_round(0, m, {"lmtx_version": __version__, "best_round": 0, "retrieval": run_retrieval(cfg, 0, fixed)})
    return RoundResult(0, m, run.round_dir(0))


def _start_teachers(job: Job) -> None:
    from ..teacher.registry import run_teacher

    cfg, rt, log = job.cfg, job.rt, job.rt.log
    common = {"device": rt.device, "threads": rt.threads, "log": log}
    job.teacher = rt.teacher or run_teacher(
        cfg.teacher.name,
        cfg.teacher,
        job.template,
        job.gold,
        cfg.loop.seed,
        urls=rt.teacher_urls,
        tokenizer=rt.teacher_tokenizer,
        timeout=rt.teacher_timeout,
        served_dtype=rt.served_dtype,
        plan=rt.teacher_plan,
        engine=rt.engine,
        **common,
    )
    log(f"[lmtx] teacher: {job.teacher.describe()}")
    if rt.engine is not None and hasattr(job.teacher, "use_engine"):  # a served teacher: its requests go through Ray
        job.teacher.use_engine(rt.engine)
        log("[lmtx] teacher requests on Ray (Ray Data's HTTP processor); answers cached every chunk as they come")
    if job.teacher.simulated:
        log("[lmtx] NOTE: SIMULATED teacher (answers from gold labels): a research tool, not a real result")
    if cfg.teacher.strong and cfg.teacher.strong_budget > 0:
        job.strong = rt.strong_teacher or run_teacher(
            cfg.teacher.strong, cfg.teacher, job.template, job.gold, cfg.loop.seed, **common
        )
        log(f"[lmtx] strong teacher (cascade, at most {cfg.teacher.strong_budget} pairs): {job.strong.describe()}")
    if job.guard_docs:
        log(
            f"[lmtx] guard: {len(job.guard_docs)} of {len(job.docs) + len(job.guard_docs)} documents held out; a "
            f"round's encoder is promoted unless the teacher rates its top-1 labels on them lower than the best "
            f"round's by more than {cfg.loop.guard_z:g} standard errors"
        )


def _resume_state(job: Job) -> State:
    cfg, run, docs, labels = job.cfg, job.run, job.docs, job.labels
    man = run.manifest()
    done = [r for r in run.finished_rounds() if r > 0]
    best = man.get("best_round", done[-1] if done else 0)
    model = job.load_round(best)
    src = cfg.encoder.model if best == 0 else str(run.round_dir(best) / "encoder")
    chain = job.load_chain(best, model) if cfg.train.merge_init > 0 else None
    opt_state = {}
    if cfg.train.carry_optimizer and best > 0:
        saved = run.load_optimizer(best)
        if saved is not None:
            opt_state = {"adamw": saved}
    choice = man.get("retrieval_choice", {}).get(str(best))
    weight = guard.weight_of(cfg, choice) if (choice or cfg.retrieval.mode != "auto") else None
    union, strong_docs, spent = (frozenset() if cfg.select.union else None), frozenset(), 0
    if done:
        pos = {d.id: i for i, d in enumerate(docs)}
        j = read_parquet(run.round_dir(done[-1]) / "judgments.parquet")
        if cfg.select.union:
            union = frozenset((pos[d], labels.index[l]) for d, l in zip(j["doc_id"], j["label_id"]) if d in pos)
        if "p_strong" in j:
            strong_docs = frozenset(pos[d] for d in j.loc[j["p_strong"].notna(), "doc_id"] if d in pos)
        spent = int(man.get("strong_pairs_asked", 0))
    return State(model, job.label_emb(model, src), best, union, strong_docs, spent, opt_state, chain, weight)


def save_hubness(job: Job, rd: Path, lemb: np.ndarray, model) -> None:
    """retrieval.hubness: the round's r(l) beside its encoder (``hubness_file``), so `lmtx evaluate/tag --model RUN`
    rank exactly as the run did without its training documents."""
    if job.cfg.retrieval.hubness <= 0:
        return
    from ..store.files import replacing

    path = hubness_file(rd, job.labels, job.cfg.encoder.label_text)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, job.hubness(lemb, model))


def run_retrieval(cfg: RunConfig, best_round: int, weight: float | None) -> dict:
    """What `lmtx evaluate/tag --model RUN` rank with (the manifest's "retrieval"): the best round's mode and dense
    weight, the label text the lexical side indexes, the pool size and how the two sides are standardized."""
    w = 1.0 if weight is None else float(weight)
    return {
        "round": best_round,
        "mode": mode_of(w),
        "dense_weight": w,
        "label_text": cfg.encoder.label_text,
        "pool": cfg.retrieval.pool,
        "standardize": cfg.retrieval.standardize,
        "hubness": cfg.retrieval.hubness,
        "hubness_k": cfg.retrieval.hubness_k,
        "taught": cfg.retrieval.taught,
        "setting": cfg.retrieval.mode,
    }


def _quiet_libraries():
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
