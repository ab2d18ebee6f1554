"""A run's fixed inputs (the job) and the helpers every step uses: embed, retrieve, pool, ask the teacher."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import RunConfig, keep_legacy
from ..search.encoder import label_embeddings, load_encoder
from ..search.hybrid import Pools, build_pools, label_hubness, label_moments, taught_counts
from ..search.index import build_index, exact_topk
from ..store.data import LabelSet, gold_of, load_docs, load_labels, stable_key
from ..store.rundir import RunDir, read_json, read_parquet
from ..teacher.base import Pair
from ..teacher.cache import AnswerCache, score_described
from ..teacher.prompts import load_template


@dataclass
class RoundResult:
    """One finished round, as `lmtx iterate` prints a line for it: ``round`` (0 = the initial encoder), its
    ``metrics`` (the round's metrics.json: gold metrics where eval docs were given, the guard's decision, the
    retrieval chosen, pairs per teacher), ``path`` (the round's folder) and ``resumed`` (read back, not recomputed)."""

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
    teacher_timeout: float = 300.0  # served teacher: seconds per HTTP request
    strong_teacher: object | None = None  # an already-built strong teacher for the cascade (tests)
    served_dtype: str | None = None  # the precision of the server `--serve` started (teacher.dtype auto resolves to it)
    teacher_backend: str = "auto"  # auto | transformers | vllm (lmtx.teacher.plan)
    teacher_plan: object | None = None  # the backend chosen for the teacher on this machine (lmtx.teacher.plan)
    engine: object | None = None  # a started lmtx.search.ray_engine.RayEngine (--engine ray): labels encoded on Ray


def template_of(cfg: RunConfig):
    t = cfg.teacher
    return load_template(t.prompt, t.prompt_file, t.max_doc_words)


def guard_split(docs: list, cfg: RunConfig) -> tuple[list, list]:
    """(training documents, held-out guard documents): a fixed sample by hash of (seed, id)."""
    g, n = cfg.loop.guard_docs, len(docs)
    if g <= 0 or n < 4:
        return docs, []
    k = int(round(g * n)) if g < 1 else int(g)
    k = min(max(k, cfg.loop.guard_min), 800, n // 3)
    if k < 1:
        return docs, []
    held = {d.id for d in sorted(docs, key=lambda d: stable_key(str(cfg.loop.seed), d.id))[:k]}
    return [d for d in docs if d.id not in held], [d for d in docs if d.id in held]


@dataclass
class Job:
    """A run's fixed inputs, shared by every round's steps, and memos of what does not change between rounds or
    steps (the label index and moments of a label matrix, each document set's lexical top lists)."""

    cfg: RunConfig
    run: RunDir
    rt: Runtime
    labels: LabelSet
    docs: list  # training documents (the guard's held-out documents excluded)
    guard_docs: list
    eval_docs: list
    template: object
    gold: dict
    teacher: object = None
    strong: object = None
    cache: AnswerCache | None = None
    index: tuple | None = None  # (label matrix, its LabelIndex): the last one built, reused while the matrix is
    lex_top: dict = field(default_factory=dict)  # document set -> its lexical top-pool (indices, BM25, mean, sd)
    moments: tuple | None = None  # (label matrix, its penalty, their hybrid.label_moments): the last one computed
    hubs: list = field(default_factory=list)  # (label matrix, r(l)) of the last two encoders (retrieval.hubness)
    taught_by_round: dict = field(default_factory=dict)  # encoder round -> Job.taught (its judgments are final)

    @cached_property
    def gold_eval_docs(self) -> list:
        """The eval documents that have gold labels (what evaluation scores)."""
        return [d for d in self.eval_docs if d.labels]

    @cached_property
    def init_weights(self) -> dict:
        """The initial encoder's weights (train.merge_init), loaded once."""
        m = load_encoder(self.cfg.encoder.model, self.cfg.encoder.max_seq_length, self.rt.device, self.rt.log)
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    @cached_property
    def has_gold(self) -> bool:
        return bool(self.gold_eval_docs)

    @cached_property
    def doc_texts(self) -> list[str]:
        return [d.text for d in self.docs]

    @cached_property
    def doc_ids(self) -> list[str]:
        return [d.id for d in self.docs]

    @cached_property
    def label_texts(self) -> list[str]:
        return [lab.text(self.cfg.encoder.label_text) for lab in self.labels.labels]

    @cached_property
    def lexical(self):
        """BM25 over the label texts (built once per label set, cached under LMTX_HOME)."""
        from ..search.lexical import lexical_index

        return lexical_index(self.labels, self.cfg.encoder.label_text, self.rt.log)

    def label_emb(self, model, cache_for: str) -> np.ndarray:
        """Every label's embedding, cached under LMTX_HOME by (encoder folder, label texts, backend): ``cache_for`` is
        the initial encoder's spec or a round's saved encoder folder (`lmtx evaluate/tag --model` reuse the
        matrix)."""
        c = self.cfg.encoder
        return label_embeddings(
            model,
            self.labels,
            c.label_text,
            c.batch_size,
            cache_for=cache_for,
            progress=self.rt.progress,
            backend=c.label_backend,
            log=self.rt.log,
            engine=self.rt.engine,
        )

    def retrieve(self, lemb: np.ndarray, demb: np.ndarray, k: int | None = None):
        """Top-k labels (default: the candidate count) per query from the labels ``lemb``; an HNSW graph is built
        once per label matrix (kept on the job), not once per query set."""
        cfg = self.cfg
        if self.index is not None and self.index[0] is lemb and self.index[1].kind == "hnsw":
            index = self.index[1]
        else:
            index = build_index(lemb, cfg.index, cfg.loop.seed, n_queries=len(demb), recall_sample=300, log=self.rt.log)
            self.index = (lemb, index)
        return index.query(demb, k or cfg.index.candidates)

    def taught(self, enc_round: int) -> np.ndarray | None:
        """retrieval.taught: per label index, the training documents on which the teacher confirmed the label in the
        judgments of rounds 1..enc_round (shrink: what that round's encoder and those before it were trained on) or
        of rounds 1..enc_round-1 (lagged: what the encoder has since been trained on for at least one more round);
        None with ignore, for the encoder as fetched, and with lagged for round 1's. Read once per round, after its
        judgments are written (the round's selection, its guard and its evaluation ask for it)."""
        mode = self.cfg.retrieval.taught
        last = enc_round - 1 if mode == "lagged" else enc_round
        if mode == "ignore" or last <= 0:
            return None
        if enc_round not in self.taught_by_round:
            pairs: set = set()
            for k in range(1, last + 1):
                p = self.run.round_dir(k) / "judgments.parquet"
                if p.exists():
                    j = read_parquet(p)
                    y = j[j["yes"].astype(bool)]
                    pairs.update(zip(y["doc_id"], y["label_id"]))
            self.taught_by_round[enc_round] = taught_counts(pairs, self.labels)
        return self.taught_by_round[enc_round]

    def hubness(self, lemb: np.ndarray, model, train_demb: np.ndarray | None = None) -> np.ndarray:
        """r(l) of the encoder ``model`` whose label matrix is ``lemb``: each label's mean cosine with its
        retrieval.hubness_k nearest training documents (``train_demb``: their embeddings by ``model``, embedded
        here when None). Kept for the last two label matrices (the best encoder and the one just trained)."""
        for m, r in self.hubs:
            if m is lemb:
                return r
        from ..search.encoder import embed

        if train_demb is None:
            train_demb = embed(model, self.doc_texts, self.cfg.encoder.batch_size)
        r = label_hubness(lemb, train_demb, self.cfg.retrieval.hubness_k)
        self.hubs = [*self.hubs[-1:], (lemb, r)]
        return r

    def penalty(
        self, lemb: np.ndarray, model, train_demb: np.ndarray | None = None, beta: float | None = None
    ) -> np.ndarray | None:
        """The dense side's hubness penalty (``beta``, default retrieval.hubness, x r(l)) for the encoder ``model``;
        None when off."""
        beta = self.cfg.retrieval.hubness if beta is None else beta
        if beta <= 0:
            return None
        return (beta * self.hubness(lemb, model, train_demb)).astype(np.float32)

    def pools(
        self,
        lemb: np.ndarray,
        demb: np.ndarray,
        key: str,
        texts: list[str],
        exact: bool = False,
        penalty: np.ndarray | None = None,
        dense: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Pools:
        """Each document's dense and lexical top-pool labels, scored on both sides (lmtx.search.hybrid), the dense
        side less ``penalty`` (``Job.penalty``). ``key`` names the document set: its lexical top lists do not change
        between rounds and are kept on the job. ``dense``: the dense top-pool lists (indices, cosines) when the caller
        has them (``Job.retrieve``): a penalty does not change them, it is applied within the pool."""
        pool = self.cfg.retrieval.pool
        if dense is not None:
            d_idx, d_sim = dense
        elif exact:
            d_idx, d_sim = exact_topk(demb, lemb, pool)
        else:
            d_idx, d_sim = self.retrieve(lemb, demb, pool)
        if key not in self.lex_top:
            self.lex_top[key] = self.lexical.topk_stats(texts, pool)
        l_idx, l_sc, mu_l, sd_l = self.lex_top[key]
        how = self.cfg.retrieval.standardize
        if how == "labels" and (
            self.moments is None
            or self.moments[0] is not lemb
            or (self.moments[1] is None) != (penalty is None)
            or (penalty is not None and not np.array_equal(self.moments[1], penalty))
        ):
            self.moments = (lemb, penalty, label_moments(lemb, penalty=penalty))
        moments = self.moments[2] if how == "labels" else None
        return build_pools(
            demb, lemb, d_idx, d_sim, l_idx, l_sc, self.lexical, texts, how, (mu_l, sd_l), moments, penalty
        )

    def ask(self, teacher, docs, doc_idx, label_idx, desc: str):
        """The teacher's answers for (docs[doc_idx[i]], labels[label_idx[i]]), through the answer cache. Returns
        a Described: (p_yes, mass, what was asked: pairs and prompts)."""
        from tqdm.auto import tqdm

        pairs = make_pairs(docs, self.labels, doc_idx, label_idx)
        bar = tqdm(total=len(pairs), desc=desc, unit="pair", disable=not self.rt.progress)
        got = score_described(teacher, self.template, pairs, self.cache, self.cfg.teacher.describe, progress=bar.update)
        bar.close()
        return got

    def load_round(self, r: int):
        """The encoder round r handed out (round 0: the initial encoder)."""
        spec = str(self.run.round_dir(r) / "encoder") if r > 0 else self.cfg.encoder.model
        return load_encoder(spec, self.cfg.encoder.max_seq_length, self.rt.device, self.rt.log)

    def load_chain(self, r: int, handed_out):
        """The weights training goes on from after round r (train.merge_init): its unmerged ``trained`` folder; for
        round 0, or a round written before merging existed, a copy of the encoder it handed out."""
        p = self.run.trained_dir(r)
        if r > 0 and p.exists():
            return load_encoder(str(p), self.cfg.encoder.max_seq_length, self.rt.device, self.rt.log)
        return copy.deepcopy(handed_out)


def make_pairs(docs, labels: LabelSet, doc_idx, label_idx) -> list[Pair]:
    out = []
    for di, li in zip(doc_idx, label_idx):
        d, lab = docs[int(di)], labels[int(li)]
        out.append(Pair(d.id, d.text, lab.id, lab.name, lab.description))
    return out


def cosines(demb: np.ndarray, lemb: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """cos(document i, label idx[i, c]) for every cell of ``idx``."""
    out = np.empty(idx.shape, np.float32)
    for s in range(0, len(idx), chunk):
        out[s : s + chunk] = np.einsum("id,icd->ic", demb[s : s + chunk], lemb[idx[s : s + chunk]])
    return out


def open_job(cfg: RunConfig, out: str | Path, rt: Runtime) -> tuple[Job, object]:
    """Check everything a user can get wrong before the run folder is touched, then prepare it. Returns the job
    and, for a new run, the initial encoder (loaded first: a bad --encoder leaves no folder behind)."""
    from ..teacher.registry import check_teacher_spec

    labels = load_labels(cfg.loop.labels)
    all_docs = load_docs(cfg.loop.docs, labels, cfg.loop.max_docs)
    docs, guard_docs = guard_split(all_docs, cfg)
    eval_docs = load_docs(cfg.loop.eval_docs, labels) if cfg.loop.eval_docs else all_docs
    template = template_of(cfg)
    if rt.teacher is None:
        check_teacher_spec(cfg.teacher.name)
        if rt.teacher_plan is None:  # refuse a teacher this machine cannot run before anything is loaded or written
            from ..teacher.plan import check_hub_weights, plan_teacher, probe_machine

            rt.teacher_plan = plan_teacher(
                cfg.teacher.name,
                probe_machine(),
                urls=rt.teacher_urls,
                backend=rt.teacher_backend,
                dtype=cfg.teacher.dtype,
            )
            if rt.teacher_plan.backend in ("transformers", "vllm"):
                check_hub_weights(rt.teacher_plan.spec)
    if cfg.teacher.strong and rt.strong_teacher is None:
        check_teacher_spec(cfg.teacher.strong)
    run = RunDir(out)
    model0 = None
    if not (run.out / "config.json").exists():
        model0 = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length, rt.device, rt.log)
    else:  # a run made before a setting existed resumes as it was made
        cfg = keep_legacy(cfg, read_json(run.out / "config.json"))
    run.prepare(cfg.to_dict())
    return Job(cfg, run, rt, labels, docs, guard_docs, eval_docs, template, gold_of(all_docs)), model0
