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
        raise ConfigError(
            f"teacher.decision {rule!r}: {kind} takes a probability in [0, 1]"
            + (
                " (rel:D < 1; rel:1 would call every candidate yes)"
                if kind == "rel"
                else " (P(yes) is never above 1: no document would be taught)"
            )
        )


LABEL_TEXTS = ("name", "description", "name+description")  # what is embedded for a label
# the default: the label's name and description, the name once (a description that already says the name is kept as
# it is). A description alone may omit the name, and a zero-shot encoder then misses what the label is called.
DEFAULT_LABEL_TEXT = "name+description"
INDEX_KINDS = ("auto", "hnsw", "exact")  # label index: auto (exact for small label sets), hnsw, exact


def one_of(value: str, choices, field: str, error=ConfigError) -> None:
    """The one check of a setting that takes one of a few words (config field or command-line option)."""
    if value not in choices:
        raise error(f"{field} must be one of {', '.join(choices)}, got {value!r}")


def setting(default, help: str, option: str | None = None, short: str | None = None):
    """A config field with its help text (what `lmtx config`, `lmtx iterate --help` and the docs show). ``option``:
    the `lmtx iterate` option that sets it (``--option``, and ``short`` e.g. ``-j``); None: only --config/--set."""
    return field(default=default, metadata={"help": help, "option": option, "short": short})


@dataclass
class EncoderConfig:
    """The bi-encoder that embeds documents and labels (one model, shared weights)."""

    model: str = setting(
        "all-MiniLM-L6-v2",
        "Initial encoder: an offline asset name, a sentence-transformers folder or a hub id.",
        "encoder",
    )
    label_text: str = setting(
        DEFAULT_LABEL_TEXT,
        "What the encoder embeds and BM25 indexes for a label: name, "
        "description or name+description (the name said once). A description alone may omit the "
        "name, and a zero-shot encoder then misses what the label is called.",
        "label-text",
    )
    max_seq_length: int = setting(256, "Tokens per text when embedding; longer documents are cut.")
    batch_size: int = setting(64, "Texts per batch when embedding (speed only).")
    label_backend: str = setting(
        "auto",
        "How labels are encoded: torch, onnx-int8 (int8 onnxruntime, one process per "
        "core; about 2x faster on CPU), torch-pool (sentence-transformers' multi-process pool "
        "over LMTX_POOL_DEVICES), auto (onnx-int8 from 50,000 labels).",
        "label-backend",
    )

    def __post_init__(self):
        one_of(self.label_backend, LABEL_BACKENDS, "encoder.label_backend")
        one_of(self.label_text, LABEL_TEXTS, "encoder.label_text")
        if self.max_seq_length < 8:
            raise ConfigError("encoder.max_seq_length must be >= 8")


@dataclass
class IndexConfig:
    """The label index the dense side searches, and how many candidates each document sends to the teacher."""

    kind: str = setting(
        "auto", "auto (exact below index.exact_below labels or for few queries, else HNSW), hnsw or exact.", "index"
    )
    exact_below: int = setting(2000, "auto: search exactly below this many labels.")
    M: int = setting(32, "HNSW graph degree (build time).", "hnsw-m")
    ef_construction: int = setting(200, "HNSW build-time beam width.", "ef-construction")
    ef_search: int = setting(100, "HNSW search-time beam width.", "ef-search")
    candidates: int = setting(
        5,
        "j: candidate labels per document sent to the teacher. Every benchmark run asks 5; on debtags 10 asked "
        "twice the teacher pairs and ended no higher (benchmarks/results/debtags.md, q05-j10).",
        "candidates",
        "-j",
    )
    exact_queries: int = setting(
        20_000,
        "auto: also search exactly when a round has at most this many queries (exact "
        "search over 783k labels for a few thousand documents takes seconds, an HNSW build "
        "many minutes; benchmarks/results/pypi-sources.md).",
    )

    def __post_init__(self):
        one_of(self.kind, INDEX_KINDS, "index.kind")
        if self.candidates < 1:
            raise ConfigError("index.candidates must be >= 1")
        if (
            self.M < 2
            or self.ef_construction < 1
            or self.ef_search < 1
            or self.exact_below < 0
            or self.exact_queries < 0
        ):
            raise ConfigError(
                "index: M >= 2, ef_construction >= 1, ef_search >= 1, exact_below >= 0 and "
                "exact_queries >= 0 are required"
            )


DESCRIBE = ("yes", "no", "both")  # teacher.describe
FLOAT_DTYPES = ("float32", "bfloat16", "float16")  # the rest of TEACHER_DTYPES are quantisations
TEACHER_DTYPES = ("auto", *FLOAT_DTYPES, "fp8", "int8", "int4", "awq", "gptq")


@dataclass
class TeacherConfig:
    """The LLM that judges (document, label) pairs, and how its P(yes) becomes a yes."""

    name: str = setting(
        "qwen0.5b",
        "The teacher: a registry name (lmtx teacher list), hf:PATH, vllm:NAME_OR_PATH, or "
        "simulated:RATE (answers from gold labels; research only).",
        "teacher",
    )
    prompt: str = setting(
        "paper-desc",
        "Prompt template: a name (./prompts/NAME.txt, then built-in; lmtx prompts list) or a .txt file.",
        "prompt",
    )
    prompt_file: str | None = setting(None, "A prompt template file; overrides teacher.prompt.", "prompt-file")
    describe: str = setting(
        "both",
        "Show the teacher each label's description (the template's ({description})): yes; no (the name alone); "
        "or both (each pair asked both ways, its P(yes) the mean: one document prefix, two short suffixes). "
        "Which of yes and no is better depends on the labels: with the 0.5B teacher the name alone ranks debtags' "
        "tags better and pypi-sources' package names worse; both comes close to the better on each "
        "(benchmarks/results/describe.md; debtags, five rounds: 0.60 handed out, against 0.55 with yes).",
        "describe",
    )
    max_doc_words: int = setting(256, "Words of a document the prompt shows the teacher.")
    decision: str = setting(
        "rel:0.02",
        "P(yes) -> yes: abs:T (P(yes) >= T), quantile:Q (above the Q-quantile of the "
        "round's pairs: calibrates a biased teacher) or rel:D (within D of the document's best "
        "P(yes): the teacher's top choice and near ties).",
        "decision",
    )
    prefix_reuse: bool = setting(
        True, "Local teacher: run each document's prompt prefix once (speed only).", "prefix-reuse"
    )
    batch_size: int = setting(
        16, "Local teacher: prompts per forward pass (a document's suffixes, packed after its prefix; speed only)."
    )
    strong: str | None = setting(
        None,
        "Cascade: a stronger, slower teacher asked only where the teacher and the student disagree most.",
        "strong-teacher",
    )
    strong_budget: int = setting(
        0,
        "Cascade: at most this many strong-teacher pairs over the run, spread evenly over the rounds.",
        "strong-budget",
    )
    dtype: str = setting(
        "auto",
        "The teacher's precision, part of its fingerprint (answers of two precisions are "
        "never mixed in the cache): auto (float32 on CPU, the checkpoint's dtype on a GPU, unknown "
        "for a server lmtx did not start), float32, bfloat16, float16, fp8, int8, int4, awq, gptq.",
        "teacher-dtype",
    )

    def __post_init__(self):
        check_decision(self.decision)
        one_of(self.dtype, TEACHER_DTYPES, "teacher.dtype")
        one_of(self.describe, DESCRIBE, "teacher.describe")
        if self.strong_budget < 0:
            raise ConfigError("teacher.strong_budget must be >= 0")
        if self.strong_budget and not self.strong:
            raise ConfigError("teacher.strong_budget needs teacher.strong (--strong-teacher)")


FUSIONS = ("auto", "equal", "teacher", "student")


@dataclass
class SelectConfig:
    """From the teacher's answers to training examples: one pseudo-positive per taught document."""

    strategy: str = setting(
        "fused",
        "The pseudo-positive: fused (the candidate with the highest fused teacher + "
        "student score), or among the teacher's yes-labels: similarity, p_yes, random, all.",
        "select",
    )
    fusion: str = setting(
        "equal",
        "Teacher and student weights in the fused score: equal, auto (estimated label-free "
        "each round; biased toward the student, benchmarks/results/fusion_check.md), teacher, "
        "student, or w:X (the teacher's weight X in [0, 1]).",
        "fusion",
    )
    union: bool = setting(
        True,
        "Train on every pair judged in any round so far (answers come from the cache), not only this round's.",
        "union",
    )

    def __post_init__(self):
        one_of(self.strategy, ("fused", "similarity", "p_yes", "random", "all"), "select.strategy")
        if self.fusion.startswith("w:"):
            try:
                fusion_weight(self.fusion)
            except ValueError as e:
                raise ConfigError(f"select.fusion: {e}") from None
        elif self.fusion not in FUSIONS:
            raise ConfigError(
                f"select.fusion must be one of {', '.join(FUSIONS)} or w:X (the teacher's weight, "
                f"0 <= X <= 1), got {self.fusion!r}"
            )


@dataclass
class TrainConfig:
    """One round's fine-tuning of the student on the pseudo-positives."""

    loss: str = setting(
        "topk",
        "topk (the k hardest in-batch negatives, softmax-weighted, as the LMTX code; better "
        "than triplet on debtags, benchmarks/results/debtags.md), triplet (the paper: every in-batch "
        "negative) or ohnm (the LMTX code's TripletMarginLossOHNM as it computes it).",
        "loss",
    )
    distill: float = setting(
        0.0,
        "Weight of a listwise distillation term beside the hard positive (KL of the fused "
        "scores' distribution over a document's candidates to the student's); 0 = off.",
        "distill",
    )
    distill_tau: float = setting(0.05, "Student temperature in the listwise term.")
    hard_negatives: bool = setting(
        True,
        "Add each document's judged candidates that the teacher said no to (and that are not its "
        "positive) as negatives, beside the in-batch ones: the near-topic labels the student confuses "
        "(benchmarks/results/round_steps.md, debtags.md).",
        "hard-negatives",
    )
    margin: float = setting(0.3, "Triplet margin.", "margin")
    topk: int = setting(10, "topk loss: hardest in-batch negatives per example.")
    tau: float = setting(0.1, "topk loss: softmax temperature over the hardest negatives.")
    fn_mask: bool = setting(True, "Mask in-batch negatives the teacher said yes to for that document.", "fn-mask")
    lr: float = setting(2e-4, "Learning rate (AdamW).", "lr")
    batch_size: int = setting(128, "Examples per optimizer step.", "batch-size")
    min_steps: int = setting(
        1,
        "> 1: a round with few examples shrinks its batch (not below 16) to get at least this "
        "many steps an epoch. Off: measured worse than the paper's batch on debtags "
        "(benchmarks/results/debtags.md).",
    )
    epochs: int = setting(1, "Epochs per round.", "epochs")
    warmup_steps: int = setting(100, "Learning-rate warm-up steps, capped at 10% of the round's steps.")
    max_doc_length: int = setting(128, "Tokens of a document when training (retrieval uses encoder.max_seq_length).")
    max_label_length: int = setting(64, "Tokens of a label text when training.")
    start: str = setting(
        "warm", "warm: train on from the best encoder so far; init: from the initial encoder each round.", "start"
    )
    carry_optimizer: bool = setting(
        True,
        "Keep AdamW's moments from round to round (the best round's, saved as "
        "optimizer.pt): a fresh AdamW's first steps swing small rounds "
        "(benchmarks/results/round_stability.md).",
    )
    checkpointing: str = setting(
        "auto",
        "Activation checkpointing while training: on, off, or auto (on from 50,000 "
        "labels): training's activations set iterate's peak memory; about 25% more training "
        "time (benchmarks/results/pypi-sources.md).",
    )
    merge_init: float = setting(
        0.5,
        "Weight-space merge with the initial encoder (WiSE-FT): the encoder a round hands "
        "out is merge_init x initial + (1 - merge_init) x trained; training goes on from the "
        "unmerged weights. 0 = off (for a teacher you trust); measured in "
        "benchmarks/results/merge_init.md.",
    )

    def __post_init__(self):
        if not 0 <= self.merge_init < 1:
            raise ConfigError(
                f"train.merge_init must be in [0, 1) (the initial encoder's share), got {self.merge_init}"
            )
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
    """The run: its inputs, its rounds, and the guard that keeps a worse round from being handed out."""

    rounds: int = setting(5, "LMTX rounds.", "rounds")
    seed: int = setting(0, "Random seed (training order, the guard's sample).", "seed")
    docs: str = setting(
        "",
        "Training documents (jsonl, csv or parquet: id, text[, labels]); labels are never used "
        "to train; neither this nor loop.labels given: the bundled sample.",
        "docs",
    )
    labels: str = setting("", "The label set (id, name, description).", "labels")
    eval_docs: str | None = setting(
        None,
        "Held-out documents with gold labels, scored every round (reported, never "
        "used); default: the training documents' gold, where they have it.",
        "eval-docs",
    )
    max_docs: int | None = setting(None, "Use only the first N training documents.", "max-docs")
    early_stop: bool = setting(False, "End the run at the first round the guard does not promote.", "early-stop")
    guard_docs: float = setting(
        0.15,
        "The never-worse guard: training documents held out (a fraction < 1, or a "
        "count; 0 = off). After each round the teacher rates each encoder's top-1 label for "
        "them, and a worse round is kept on disk but not promoted.",
        "guard-docs",
    )
    guard_min: int = setting(30, "At least this many held-out documents (if the corpus allows), at most 800.")
    guard_z: float = setting(
        2.0,
        "A round is refused when its paired mean P(yes) is below the best round's by more "
        "than this many standard errors (at 1 the guard refused better rounds; "
        "benchmarks/results/debtags.md).",
    )
    eval_sample: int = setting(
        -1,
        "Per-round evaluation on a fixed sample of this many eval documents: -1 auto (all, "
        "or 1,000 when eval documents x labels > 1e9), 0 all. lmtx evaluate is always full.",
        "eval-sample",
    )

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
STANDARDIZE_MODES = ("labels", "pool")  # how the hybrid ranking scales its two sides (lmtx.search.hybrid)
TAUGHT_MODES = ("lagged", "shrink", "ignore")  # retrieval.taught: each label's lexical share as the student learns it


@dataclass
class RetrievalConfig:
    """Lexical (BM25 over the label texts) and dense (the encoder's cosine) evidence, fused per document."""

    mode: str = setting(
        "auto",
        "What the run ranks with (evaluation, lmtx tag --model RUN, the student's view when "
        "picking pseudo-positives): auto (hybrid at the prior weight -- retrieval.zero_shot_weight for "
        "the encoder as fetched, retrieval.dense_weight for one this run trained -- unless the teacher, "
        "rating each weight's top-1 label on the guard's held-out documents, prefers another by more "
        "than 2.5 standard errors; dense only and BM25 only included), dense, lexical or hybrid (at "
        "retrieval.dense_weight).",
        "retrieval",
    )
    dense_weight: float = setting(
        0.9,
        "The dense side's weight (1 = dense only, 0 = BM25 only) for an encoder this run trained: "
        "auto's prior for it, and hybrid's weight. With scores standardized over every label, the "
        "trained students' best weight on gold was 0.8-0.97 on debtags, the sample and 783,728 "
        "labels, and 0.9 lost at most 0.01 P@1 to it (benchmarks/results/standardize.md).",
    )
    zero_shot_weight: float = setting(
        0.8,
        "The dense side's weight for the encoder as fetched (round 0, not trained by lmtx): auto's "
        "prior for it. With scores standardized over every label, the best weight on gold was 0.7-0.9 "
        "on the measured corpora and 0.8 lost at most 0.01 P@1 to it "
        "(benchmarks/results/standardize.md).",
    )
    candidate_weight: float | None = setting(
        0.8,
        "The teacher's candidates: each document's top-j by the fused score at this dense weight (1 = "
        "the encoder's own top-j, 0 = BM25's); fused candidates hold more gold per teacher pair than a "
        "union or either side alone (benchmarks/results/hybrid.md), and with scores standardized over "
        "every label the share of documents shown a gold candidate peaked near 0.8 on every measured corpus "
        "(benchmarks/results/standardize.md). null (a JSON --config) or None (the Python API): the "
        "weight the run ranks its best encoder with; measured, it asked more pairs and ended no higher "
        "(benchmarks/results/debtags.md, default_job.md).",
        "candidate-weight",
    )
    standardize: str = setting(
        "labels",
        "How each side's scores are put on one scale before the weighted sum: labels (each document's "
        "mean and standard deviation over every label, computed exactly: a weight means the same on "
        "411 labels as on 783,728) or pool (over the side's own top retrieval.pool labels, as lmtx did "
        "before; a run folder written then ranks so). Measured: benchmarks/results/standardize.md.",
    )
    pool: int = setting(
        200, "Labels per side and document that the fusion scores (each side's top-pool, pooled together)."
    )
    hubness: float = setting(
        0.0,
        "Hubness penalty beta on the dense side (CSLS's local scaling): a label's cosine with a document "
        "becomes cos - beta x r(l), r(l) the label's mean cosine with its retrieval.hubness_k nearest "
        "training documents (the run's own unlabelled documents: no gold, no teacher), so a hub label -- "
        "near many documents whatever they say -- stops taking first place from better ones. Every ranking "
        "of the run uses it (candidates, the guard's weight choice, evaluation, lmtx tag --model RUN). 0 = "
        "off, the default: at 0.5 (CSLS's own ranking) it lifted the encoder as fetched and, slightly, a "
        "student at 783,728 labels, but a five-round debtags run ended lower, with less recall "
        "(benchmarks/results/hubness.md, debtags.md).",
        "hubness",
    )
    candidate_hubness: float | None = setting(
        None,
        "The hubness penalty of the teacher's candidates alone (retrieval.hubness's beta for the candidate "
        "ranking; the run's own ranking keeps retrieval.hubness). None: retrieval.hubness. At 0.5 a "
        "five-round debtags run ended no higher (benchmarks/results/debtags.md, q05-hubcand).",
        "candidate-hubness",
    )
    hubness_k: int = setting(10, "Training documents per label that r(l) of retrieval.hubness averages over.")
    taught: str = setting(
        "lagged",
        "Per label, how much the lexical side counts in what the run hands out (evaluation, lmtx tag "
        "--model RUN, the guard's weight choice). lagged: a label the teacher confirmed on c training "
        "documents in the rounds before the encoder's last ranks at dense weight 1 - (1 - w) / (1 + c), so "
        "the words count fully for labels the student was never taught and fade once it has been trained "
        "on them for a further round (round 1's encoder hands out the plain hybrid); shrink: the same with "
        "c counted through the encoder's own round; ignore: every label at weight w, as runs made before "
        "either. The teacher's candidates and the student's view in training are not changed. Replayed on "
        "finished runs, shrink stayed near the better of dense only and hybrid where the fixed weight fell "
        "behind dense, but fell behind the plain hybrid after round 1; lagged did neither "
        "(benchmarks/results/taught_full.md).",
    )

    def __post_init__(self):
        one_of(self.mode, RETRIEVAL_MODES, "retrieval.mode")
        one_of(self.standardize, STANDARDIZE_MODES, "retrieval.standardize")
        one_of(self.taught, TAUGHT_MODES, "retrieval.taught")
        for k in ("dense_weight", "zero_shot_weight", "candidate_weight"):
            if getattr(self, k) is not None and not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"retrieval.{k} must be in [0, 1] (the dense side's weight), got {getattr(self, k)}")
        if self.pool < 1:
            raise ConfigError(f"retrieval.pool must be >= 1, got {self.pool}")
        ch = self.candidate_hubness
        if not 0.0 <= self.hubness <= 2.0 or not (ch is None or 0.0 <= ch <= 2.0) or self.hubness_k < 1:
            raise ConfigError(
                f"retrieval.hubness and candidate_hubness must be in [0, 2] and retrieval.hubness_k >= 1, got "
                f"{self.hubness}, {ch} and {self.hubness_k}"
            )


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
RESUMABLE_KEYS = {
    ("loop", "rounds"),
    ("teacher", "prefix_reuse"),
    ("teacher", "batch_size"),
    ("encoder", "batch_size"),
    ("loop", "eval_sample"),
}  # eval_sample: what is reported, not what is trained


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


def settings() -> list[tuple[str, dataclasses.Field]]:
    """Every config field as ('section.key', its dataclass field), in RunConfig's order."""
    return [
        (f"{f.name}.{g.name}", g) for f in dataclasses.fields(RunConfig) for g in dataclasses.fields(f.default_factory)
    ]  # type: ignore[arg-type]


def field_types() -> dict[str, object]:
    """'section.key' -> the field's annotated type, for every config field."""
    return {k: f.type for k, f in settings()}


def value_type(f: dataclasses.Field) -> type:
    """The Python type a field holds (None aside): str, int, float or bool."""
    t = str(f.type).replace("<class '", "").replace("'>", "").split("|")[0].strip()
    return {"str": str, "int": int, "float": float, "bool": bool}[t]


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v) if isinstance(v, str) else str(v)


def render_config(d: dict | None = None, sources: dict[str, str] | None = None, width: int = 100) -> str:
    """A config as TOML: each section's purpose, then each key with its help as comments above it. ``d``: the
    values (default: the defaults); ``sources``: 'section.key' -> where a value came from, said beside it. A key
    without a value (None) is written commented out. The output is a valid --config file."""
    import textwrap

    d = d or RunConfig().to_dict()
    out = ["# lmtx run settings: every key, its help and its value (`lmtx config`; a valid --config file)"]
    for sect in dataclasses.fields(RunConfig):
        cls = sect.default_factory  # type: ignore[misc]
        out += ["", f"[{sect.name}]"] + [f"# {x}" for x in textwrap.wrap((cls.__doc__ or "").strip(), width - 2)]
        for g in dataclasses.fields(cls):
            key = f"{sect.name}.{g.name}"
            opt = g.metadata.get("option")
            help_ = g.metadata["help"] + (f" (lmtx iterate --{opt})" if opt else "")
            out += [""] + [f"# {x}" for x in textwrap.wrap(help_, width - 2)]
            v = d[sect.name][g.name]
            line = f"{g.name} = {_toml_value(v)}" if v is not None else f"# {g.name} = (unset)"
            if sources is not None:
                line += f"  # {sources.get(key, 'default')}"
            out.append(line)
    return "\n".join(out) + "\n"


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
            raise ConfigError(
                f"{source} {item!r}: unknown key {key!r}" + (f" (did you mean {close[0]}?)" if close else "")
            )
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


# Settings added with a default that changes results: the value a run made before the setting existed had. A saved
# config that lacks the key is such a run, and it resumes with that value (the same command continues it as it was
# started; keep_legacy), not with today's default.
LEGACY_VALUES = {("train", "hard_negatives"): False, ("teacher", "describe"): "yes", ("retrieval", "taught"): "ignore"}
# Settings whose default changed: their former defaults. A saved config holding one of them, resumed by a command that
# leaves the setting at today's default, keeps the value it was made with (keep_legacy) rather than being refused.
FORMER_DEFAULTS = {("retrieval", "taught"): ("shrink",)}


def keep_legacy(cfg: "RunConfig", saved: dict) -> "RunConfig":
    """``cfg`` for resuming the run whose config.json is ``saved``: each setting of LEGACY_VALUES that the saved
    config lacks, and each setting of FORMER_DEFAULTS that it holds at a former default, takes the value the run was
    made with where ``cfg`` leaves it at today's default."""
    d, defaults = cfg.to_dict(), RunConfig().to_dict()
    for sect, key in set(LEGACY_VALUES) | set(FORMER_DEFAULTS):
        if d[sect][key] != defaults[sect][key]:
            continue
        had = saved.get(sect, {})
        if key not in had and (sect, key) in LEGACY_VALUES:
            d[sect][key] = LEGACY_VALUES[(sect, key)]
        elif key in had and had[key] in FORMER_DEFAULTS.get((sect, key), ()):
            d[sect][key] = had[key]
    return RunConfig.from_dict(d)


def config_diff(old: dict, new: dict) -> list[str]:
    """Differences that make a saved run and a new config incompatible. A key the saved config lacks (an
    option added to lmtx later) counts as the value such runs had (LEGACY_VALUES), else as its default."""
    defaults = RunConfig().to_dict()
    out = []
    for sect in sorted(set(old) | set(new)):
        a, b = old.get(sect, {}), new.get(sect, {})
        for k in sorted(set(a) | set(b)):
            if (sect, k) in RESUMABLE_KEYS:
                continue
            if k not in a and b.get(k) == LEGACY_VALUES.get((sect, k), defaults.get(sect, {}).get(k)):
                continue
            if a.get(k) != b.get(k):
                out.append(f"{sect}.{k}: {a.get(k)!r} (saved) != {b.get(k)!r} (now)")
    return out


def option_keys() -> dict[str, str]:
    """`lmtx iterate` option (as a Python name, e.g. candidates) -> its config key (index.candidates)."""
    return {f.metadata["option"].replace("-", "_"): k for k, f in settings() if f.metadata.get("option")}


def config_layers(file=None, overrides=(), given: dict | None = None, base: dict | None = None) -> tuple[dict, dict]:
    """defaults (or ``base``) < a --config file < ``given`` ('section.key' -> value: options typed on the command line)
    < --set overrides. Returns the settings and, per key set by other than the defaults, where it came from."""
    from pathlib import Path

    d, sources = base or RunConfig().to_dict(), {}
    if file is not None:
        for sect, sub in load_config_file(file).items():
            d[sect].update(sub)
            sources.update({f"{sect}.{k}": f"from {file}" for k in sub})
    for key, v in (given or {}).items():
        sect, k = key.split(".")
        d[sect][k] = str(v) if isinstance(v, Path) else v
        sources[key] = "from the command line"
    for item in overrides or []:
        apply_overrides(d, [item])
        sources[item.partition("=")[0].strip()] = "from --set"
    return d, sources


def build_config(
    file=None, overrides=(), given: dict | None = None, options: dict | None = None, base: dict | None = None
) -> RunConfig:
    """The run's RunConfig from its layers (config_layers); ``options``: iterate's option names -> values (the
    Python API's keywords). Neither loop.docs nor loop.labels: the bundled sample."""
    from pathlib import Path

    keys = option_keys()
    given = dict(given or {})
    for name, v in (options or {}).items():
        if name not in keys:
            import difflib

            close = difflib.get_close_matches(name, list(keys), n=1)
            raise ConfigError(f"unknown option {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        given[keys[name]] = v
    d, _ = config_layers(file, overrides, given, base)
    if not d["loop"]["docs"] and not d["loop"]["labels"]:
        sample = Path(__file__).resolve().parent.parent / "data" / "sample"
        d["loop"].update(docs=str(sample / "docs.jsonl"), labels=str(sample / "labels.jsonl"))
        d["loop"]["eval_docs"] = d["loop"]["eval_docs"] or str(sample / "eval.jsonl")
    elif not d["loop"]["docs"] or not d["loop"]["labels"]:
        raise ConfigError("give both docs and labels (--docs, --labels), or neither for the bundled sample")
    return RunConfig.from_dict(d)
