"""Typed, documented run configuration. Saved as OUT/config.json; a resumed run must match it."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    pass


DECISION_RE = re.compile(r"^(abs|quantile|rel):(\d+(?:\.\d*)?|\.\d+)$")


# A large label set: from here on, labels are encoded with onnx-int8 (backend auto), their encoding shows a progress
# bar, and a round no longer scores the unmerged weights (a second label encoding). Measured in
# benchmarks/results/pypi-sources.md (label encoding per backend).
LARGE_LABEL_SET = 50_000
LABEL_BACKENDS = ("auto", "torch", "onnx-int8", "torch-pool")


def fusion_weight(mode: str) -> float:
    """The teacher's weight of a ``w:X`` fusion mode; ValueError unless X is a number in [0, 1]."""
    try:
        w = float(mode[2:])
    except ValueError:
        w = float("nan")
    if not 0.0 <= w <= 1.0:  # also false for nan
        raise ValueError(f"fusion w:X needs the teacher's weight X in [0, 1], got {mode!r}")
    return w


def check_decision(rule: str) -> None:
    """abs:T and quantile:Q need a value in [0, 1]; rel:D a value in [0, 1)."""
    m = DECISION_RE.match(rule)
    if not m:
        raise ConfigError(f"teacher.decision must look like abs:0.5, quantile:0.7 or rel:0.05, got {rule!r}")
    kind, x = m.group(1), float(m.group(2))
    if x > 1 or (kind == "rel" and x >= 1):
        raise ConfigError(f"teacher.decision {rule!r}: {kind} takes a probability in [0, 1]"
                          + (" (rel:D < 1; rel:1 would call every candidate yes)" if kind == "rel" else
                             " (P(yes) is never above 1: no document would be taught)"))


LABEL_TEXTS = ("name", "description", "name+description")  # what is embedded for a label
# the default: the label's name and description, the name once (a description that already says the name is kept as
# it is). A description alone may omit the name, and a zero-shot encoder then misses what the label is called.
DEFAULT_LABEL_TEXT = "name+description"
INDEX_KINDS = ("auto", "hnsw", "exact")  # label index: auto (exact for small label sets), hnsw, exact


def one_of(value: str, choices, field: str, error=ConfigError) -> None:
    """The one check of a setting that takes one of a few words (config field or command-line option)."""
    if value not in choices:
        raise error(f"{field} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class EncoderConfig:
    model: str = "all-MiniLM-L6-v2"  # asset name, local ST folder, or hub id (e.g. msmarco-distilbert-base-v4)
    label_text: str = DEFAULT_LABEL_TEXT  # what is embedded (and what BM25 indexes): name | description | name+description
    max_seq_length: int = 256  # tokens; longer documents are cut by the encoder
    batch_size: int = 64  # for embedding
    # how labels are encoded: torch (SentenceTransformer.encode), torch-pool (its multi-process pool over
    # LMTX_POOL_DEVICES: GPUs or CPU processes), onnx-int8 (int8 onnxruntime, one process per core;
    # lmtx.search.fast_encode), auto (onnx-int8 from 50,000 labels)
    label_backend: str = "auto"

    def __post_init__(self):
        one_of(self.label_backend, LABEL_BACKENDS, "encoder.label_backend")
        one_of(self.label_text, LABEL_TEXTS, "encoder.label_text")
        if self.max_seq_length < 8:
            raise ConfigError("encoder.max_seq_length must be >= 8")


@dataclass
class IndexConfig:
    kind: str = "auto"  # auto (exact below `exact_below` labels, else hnsw) | hnsw | exact
    exact_below: int = 2000
    # build time
    M: int = 32
    ef_construction: int = 200
    # search time
    ef_search: int = 100
    candidates: int = 10  # j: candidate labels per document sent to the teacher
    # auto also searches exactly when a round has at most this many queries: exact search over 783k labels for
    # a few thousand documents takes seconds, an HNSW build over them many minutes (pypi-sources benchmark)
    exact_queries: int = 20_000

    def __post_init__(self):
        one_of(self.kind, INDEX_KINDS, "index.kind")
        if self.candidates < 1:
            raise ConfigError("index.candidates must be >= 1")
        if self.M < 2 or self.ef_construction < 1 or self.ef_search < 1 or self.exact_below < 0 or self.exact_queries < 0:
            raise ConfigError("index: M >= 2, ef_construction >= 1, ef_search >= 1, exact_below >= 0 and "
                              "exact_queries >= 0 are required")


FLOAT_DTYPES = ("float32", "bfloat16", "float16")  # the rest of TEACHER_DTYPES are quantisations
TEACHER_DTYPES = ("auto", *FLOAT_DTYPES, "fp8", "int8", "int4", "awq", "gptq")


@dataclass
class TeacherConfig:
    name: str = "qwen0.5b"  # registry name, hf:PATH, or simulated:RATE (research only)
    prompt: str = "paper-desc"  # built-in template name (see `lmtx prompts list`)
    prompt_file: str | None = None  # a template file; overrides `prompt`
    max_doc_words: int = 256
    # decision rule turning P(yes) into yes/no:
    #   abs:T       P(yes) >= T
    #   quantile:Q  P(yes) >= the Q-quantile of this round's judged pairs (calibrates a biased teacher)
    #   rel:D       P(yes) >= the document's best P(yes) - D (the teacher's top choice, and near ties)
    decision: str = "rel:0.02"
    prefix_reuse: bool = True
    batch_size: int = 16
    # teacher cascade: a stronger (slower) teacher asked only where the cheap teacher and the student
    # disagree most, at most `strong_budget` pairs over the whole run (spread evenly over the rounds)
    strong: str | None = None
    strong_budget: int = 0
    # the precision the teacher computes in: part of its fingerprint (answers of a float32 and a bfloat16 teacher
    # are never mixed in the cache). auto: float32 for the local backend and for `--serve` on a CPU, the
    # checkpoint's dtype (bfloat16 for float32 checkpoints) for `--serve` on a GPU and the in-process vLLM engine,
    # "unknown" for a server lmtx did not start (declare it, e.g. bfloat16, awq, fp8, to share answers)
    dtype: str = "auto"

    def __post_init__(self):
        check_decision(self.decision)
        one_of(self.dtype, TEACHER_DTYPES, "teacher.dtype")
        if self.strong_budget < 0:
            raise ConfigError("teacher.strong_budget must be >= 0")
        if self.strong_budget and not self.strong:
            raise ConfigError("teacher.strong_budget needs teacher.strong (--strong-teacher)")


FUSIONS = ("auto", "equal", "teacher", "student")


@dataclass
class SelectConfig:
    # fused (default): the candidate with the highest fused teacher+student score (lmtx.learn.fuse);
    # among the teacher's yes-labels: similarity (most similar) | p_yes | random (re-drawn each step) | all
    strategy: str = "fused"
    # how teacher and student are weighted in the fused score: equal (default), auto (label-free estimate each
    # round; measured biased toward the student, see benchmarks/results/fusion_check.md), teacher, student, or
    # w:X (the teacher's weight X, the student's 1 - X; equal is w:0.5)
    fusion: str = "equal"
    # train on every judged pair of every round so far (answers come from the cache), not this round's only
    union: bool = True

    def __post_init__(self):
        one_of(self.strategy, ("fused", "similarity", "p_yes", "random", "all"), "select.strategy")
        if self.fusion.startswith("w:"):
            try:
                fusion_weight(self.fusion)
            except ValueError as e:
                raise ConfigError(f"select.fusion: {e}") from None
        elif self.fusion not in FUSIONS:
            raise ConfigError(f"select.fusion must be one of {', '.join(FUSIONS)} or w:X (the teacher's weight, "
                              f"0 <= X <= 1), got {self.fusion!r}")


@dataclass
class TrainConfig:
    # topk (LMTX code: k hardest in-batch negatives, softmax-weighted) | triplet (paper: every in-batch negative).
    # topk is the default: on debtags (SIMULATED 10% teacher, 500 docs) it gave P@1 0.598 vs 0.536 for triplet.
    loss: str = "topk"  # topk | triplet | ohnm (the LMTX code's TripletMarginLossOHNM, as it computes it)
    # listwise distillation beside the hard positive: weight of KL(fused-score distribution over the
    # document's judged candidates || the student's softmax over them); 0 = off
    distill: float = 0.0
    distill_tau: float = 0.05  # student temperature in the listwise term
    margin: float = 0.3
    topk: int = 10
    tau: float = 0.1
    fn_mask: bool = True  # mask in-batch negatives that the teacher said yes to for this document
    lr: float = 2e-4
    batch_size: int = 128
    # > 1: a round with few examples shrinks its batch (not below 16) to get at least this many optimizer steps
    # per epoch, and warms up for at least one step. Off by default: on debtags (300 docs, qwen0.5b) min_steps 8
    # measured worse than the paper's batch (round 2 P@1 0.515 vs 0.554; default job 0.470 vs 0.547), though
    # rounds of one or two steps swing more (default job round 3: 0.547 -> 0.472)
    min_steps: int = 1
    epochs: int = 1
    warmup_steps: int = 100  # capped at 10% of the round's steps
    max_doc_length: int = 128  # training only; embedding for retrieval uses encoder.max_seq_length
    max_label_length: int = 64
    start: str = "warm"  # warm: from the previous round's encoder | init: from the initial encoder each round
    # keep AdamW's moments from round to round (those of the best round, saved as optimizer.pt beside its
    # encoder). A fresh AdamW's first update moves every weight by lr in the sign of its gradient; small rounds
    # are one or two such steps, and their sum drifts (same 120 examples trained 5 times, sample data: P@1 0.510,
    # 0.547, 0.457, 0.507, 0.475 fresh vs 0.510, 0.513, 0.518, 0.512, 0.502 carried; round_stability.md)
    carry_optimizer: bool = True
    # activation (gradient) checkpointing while training: on | off | auto (on from 50,000 labels, where label
    # matrices already take GBs). Training's activations, not the labels, set iterate's peak memory: one step of
    # batch 128 on pypi-sources texts (128 tokens) peaked at 6.7 GB, two at 8.2-8.8 GB; with checkpointing 3.4 GB
    # for two steps, at ~25% more training time (same gradients: dropout masks are replayed)
    checkpointing: str = "auto"
    # weight-space merge with the initial encoder (WiSE-FT, Wortsman et al. 2022): the encoder a round hands out
    # (retrieval, guard, evaluate, tag) is merge_init * initial + (1 - merge_init) * trained; training goes on from
    # the unmerged weights (round-NN/trained). 0 = off. Measured end to end (README, debtags.md): with the 0.5B
    # teacher every round beat the one before and the finals rose (default job 0.517 -> 0.533, debtags 0.553 ->
    # 0.561, bare names 0.557 -> 0.565); round 1 pays 0.015-0.04. With a SIMULATED perfect teacher it costs
    # (0.648 -> 0.621): for a teacher you trust, set 0
    merge_init: float = 0.5

    def __post_init__(self):
        if not 0 <= self.merge_init < 1:
            raise ConfigError(f"train.merge_init must be in [0, 1) (the initial encoder's share), got {self.merge_init}")
        one_of(self.checkpointing, ("auto", "on", "off"), "train.checkpointing")
        one_of(self.loss, ("topk", "triplet", "ohnm"), "train.loss")
        if self.distill < 0 or self.distill_tau <= 0:
            raise ConfigError("train.distill must be >= 0 and train.distill_tau > 0")
        one_of(self.start, ("warm", "init"), "train.start")
        if self.lr <= 0 or self.batch_size < 2 or self.epochs < 1 or self.min_steps < 1:
            raise ConfigError("train: lr > 0, batch_size >= 2, epochs >= 1 and min_steps >= 1 are required")
        if self.margin < 0 or self.tau <= 0 or self.topk < 1:
            raise ConfigError("train: margin >= 0, tau > 0 and topk >= 1 are required")


@dataclass
class LoopConfig:
    rounds: int = 5
    seed: int = 0
    docs: str = ""
    labels: str = ""
    eval_docs: str | None = None  # held-out documents with gold labels; default: the training docs' gold
    max_docs: int | None = None  # use only the first N training documents
    # stop when the teacher's mean P(yes) on the encoder's top-1 candidates stops rising (the LMTX code's
    # label-free stopping rule); the run's best encoder is then the one the teacher agreed with most
    early_stop: bool = False
    # the never-worse guard: a fixed sample of the training documents is held out of training; after
    # each round the teacher's mean P(yes) on each encoder's top-1 label for them decides whether the
    # round's encoder replaces the best one so far (a worse round stays on disk, not promoted, and the
    # next round starts from the best). A fraction (< 1) or a count; 0 turns the guard off.
    guard_docs: float = 0.15
    guard_min: int = 30  # at least this many held-out documents (if the corpus allows), at most 800
    # a round is refused when its paired mean P(yes) is below the best round's by more than guard_z standard
    # errors. 2, not 1: at 1 the guard refused six rounds of the measured 0.5B-teacher runs (debtags, sample), all
    # between 1.1 and 1.5 standard errors, and five of them were better rounds on gold (the sample's round 1:
    # 0.385 -> 0.502 refused); a clear drop (a wrecked encoder) is many standard errors
    guard_z: float = 2.0
    # per-round evaluation on a fixed sample of this many eval documents (by hash of their id); -1 = auto (all of
    # them, or 1,000 when eval docs x labels > 1e9: extreme label sets); 0 = all. `lmtx evaluate` is always full.
    eval_sample: int = -1

    def __post_init__(self):
        if self.rounds < 0:
            raise ConfigError("loop.rounds must be >= 0")
        if self.eval_sample < -1:
            raise ConfigError("loop.eval_sample must be -1 (auto), 0 (all) or a document count")
        if self.guard_docs < 0:
            raise ConfigError("loop.guard_docs must be >= 0 (a fraction < 1, or a count)")
        if not self.guard_z > 0:
            raise ConfigError(f"loop.guard_z must be > 0 (standard errors), got {self.guard_z}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ConfigError(f"loop.max_docs must be >= 1 (or unset for all documents), got {self.max_docs}")
        # one file, one config: relative and absolute spellings of the same path are the same run
        from pathlib import Path

        for k in ("docs", "labels", "eval_docs"):
            v = getattr(self, k)
            if v:
                setattr(self, k, str(Path(v).expanduser().resolve()))


RETRIEVAL_MODES = ("auto", "dense", "lexical", "hybrid")


@dataclass
class RetrievalConfig:
    """Lexical (BM25 over the label texts) and dense (the encoder's cosine) evidence, fused per document (lmtx.search.hybrid).
    """

    # what the run ranks with (evaluation, `lmtx tag --model RUN`, and the student's view in the pseudo-positive
    # pick): auto (each encoder ranks at dense_weight unless the teacher, rating each weight's top-1 label on the
    # guard's held-out documents, prefers another weight, dense only and lexical only included, by more than one
    # standard error), dense, lexical, or hybrid (always at dense_weight)
    mode: str = "auto"
    # the dense side's weight (1 = dense only, 0 = BM25 only): hybrid's weight, and auto's starting point. 0.8: the
    # best or near-best weight on gold in the measured rows, zero-shot and after training (results/hybrid.md)
    dense_weight: float = 0.8

    # the teacher's candidates: each document's top-j by the fused score at this dense weight (1 = the dense top-j,
    # the recipe before hybrid retrieval). Fused candidates hold more gold per teacher pair than a union of each
    # side's top labels or either side alone (benchmarks/results/hybrid.md)
    candidate_weight: float = 0.65
    pool: int = 200  # labels per side and document that the fusion scores (each side's top-pool)

    def __post_init__(self):
        one_of(self.mode, RETRIEVAL_MODES, "retrieval.mode")
        for k in ("dense_weight", "candidate_weight"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"retrieval.{k} must be in [0, 1] (the dense side's weight), got {getattr(self, k)}")
        if self.pool < 1:
            raise ConfigError(f"retrieval.pool must be >= 1, got {self.pool}")


@dataclass
class RunConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        parts = {}
        for f in dataclasses.fields(cls):
            sub = d.get(f.name, {})
            typ = f.default_factory  # type: ignore[misc]
            known = {x.name for x in dataclasses.fields(typ)}
            extra = set(sub) - known
            if extra:
                raise ConfigError(f"config.{f.name}: unknown key(s) {sorted(extra)}")
            try:
                parts[f.name] = typ(**sub)
            except TypeError as e:  # e.g. a string where a number belongs, compared in __post_init__
                raise ConfigError(f"config.{f.name}: {e}") from None
        extra = set(d) - {f.name for f in dataclasses.fields(cls)}
        if extra:
            raise ConfigError(f"config: unknown section(s) {sorted(extra)}")
        return cls(**parts)


# Keys that may change between a run and its resumption without invalidating finished rounds: the round count,
# and settings that change only speed (the answers and the training are the same).
RESUMABLE_KEYS = {("loop", "rounds"), ("teacher", "prefix_reuse"), ("teacher", "batch_size"), ("encoder", "batch_size"),
                  ("loop", "eval_sample")}  # eval_sample: what is reported, not what is trained


def _coerce(value: str, typ, key: str):
    """A --set value (a string) as the type of the dataclass field ``key``."""
    t = str(typ)
    if value.lower() in ("none", "null") and "None" in t:
        return None
    try:
        if t.startswith("bool") or t == "<class 'bool'>":
            if value.lower() in ("true", "1", "yes", "on"):
                return True
            if value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if t.startswith("int") or t == "<class 'int'>":
            return int(value)
        if t.startswith("float") or t == "<class 'float'>":
            return float(value)
    except ValueError:
        raise ConfigError(f"--set {key}={value}: expected {t.replace('<class ', '').rstrip('>')}") from None
    return value


def field_types() -> dict[str, object]:
    """'section.key' -> the field's annotated type, for every config field."""
    out = {}
    for f in dataclasses.fields(RunConfig):
        for g in dataclasses.fields(f.default_factory):  # type: ignore[misc]
            out[f"{f.name}.{g.name}"] = g.type
    return out


def apply_overrides(d: dict, overrides: list[str], source: str = "--set") -> dict:
    """``section.key=value`` strings applied to a config dict (typed by the dataclass fields)."""
    types = field_types()
    for item in overrides:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"{source} {item!r}: use section.key=value, e.g. train.lr=1e-4")
        if key not in types:
            import difflib

            close = difflib.get_close_matches(key, list(types), n=1)
            raise ConfigError(f"{source} {item!r}: unknown key {key!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        sect, k = key.split(".")
        d.setdefault(sect, {})[k] = _coerce(value.strip(), types[key], key)
    return d


def load_config_file(path) -> dict:
    """A run config file: TOML or JSON, the same sections and keys as a run's config.json (any subset)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            d = tomllib.loads(p.read_text(encoding="utf-8"))
        else:
            import json

            d = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"{p}: not valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'}: {e}") from None
    types = field_types()
    for sect, sub in d.items():
        if not isinstance(sub, dict):
            raise ConfigError(f"{p}: [{sect}] must be a table of keys")
        for k in sub:
            if f"{sect}.{k}" not in types:
                raise ConfigError(f"{p}: unknown key {sect}.{k}")
    return d


def config_diff(old: dict, new: dict) -> list[str]:
    """Differences that make a saved run and a new config incompatible. A key the saved config lacks (an
    option added to lmtx later) counts as its default."""
    defaults = RunConfig().to_dict()
    out = []
    for sect in sorted(set(old) | set(new)):
        a, b = old.get(sect, {}), new.get(sect, {})
        for k in sorted(set(a) | set(b)):
            if (sect, k) in RESUMABLE_KEYS:
                continue
            if k not in a and b.get(k) == defaults.get(sect, {}).get(k):
                continue
            if a.get(k) != b.get(k):
                out.append(f"{sect}.{k}: {a.get(k)!r} (saved) != {b.get(k)!r} (now)")
    return out
