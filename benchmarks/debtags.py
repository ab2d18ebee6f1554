"""The debtags benchmark: does training with the teacher beat the encoder it starts from?

    python benchmarks/debtags.py                      # every row, the default budget
    python benchmarks/debtags.py --rows baseline,init,simulated
    python benchmarks/debtags.py --train-docs 1000 --eval-docs 2000 --real-docs 300

Trains on `dev` documents WITHOUT their labels (gold is used only for evaluation and by the
SIMULATED teacher rows) and evaluates on `test` documents. Every lmtx row is an ordinary run folder
under benchmarks/runs/ (rerunning resumes; finished rows cost nothing). Writes
benchmarks/results/debtags.json and benchmarks/results/debtags.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.config import (  # noqa: E402
    EncoderConfig,
    IndexConfig,
    LoopConfig,
    RetrievalConfig,
    RunConfig,
    SelectConfig,
    TeacherConfig,
    TrainConfig,
)
from lmtx.evaluation.evaluate import evaluate  # noqa: E402
from lmtx.learn.fuse import teacher_weaker as _teacher_weaker  # noqa: E402
from lmtx.loop.run import Runtime, iterate  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402

COLS = ["P@1", "P@3", "P@5", "R@5", "nDCG@5", "PSP@5"]


def subsets(bench: Path, out: Path, n_train: int, n_eval: int):
    """Fixed subsets (md5 of the id): the first n_train dev docs, the first n_eval test docs."""
    rows = [json.loads(l) for l in open(bench / "docs.jsonl")]
    key = lambda d: hashlib.md5(d["id"].encode()).hexdigest()  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, split, n in (("train", "dev", n_train), ("eval", "test", n_eval)):
        part = sorted((d for d in rows if d["split"] == split), key=key)[:n]
        p = out / f"{name}-{n}.jsonl"
        if not p.exists():
            p.write_text(
                "".join(json.dumps({"id": d["id"], "text": d["text"], "labels": d["labels"]}) + "\n" for d in part)
            )
        paths[name] = p
    return paths


SEED_CACHES: list[Path] = []


def seed_cache(run_dir: Path):
    """Merge earlier teacher answers (keyed by model, template, document and label text) into a run's cache: other
    caches, or files that benchmarks/answers.py exported (benchmarks/answers/*.jsonl.gz)."""
    from answers import seed

    own = (run_dir / "teacher-cache.sqlite").resolve()
    for src in SEED_CACHES:
        if src.exists() and src.resolve() != own:
            seed(src, run_dir)


def share_back(run_dir: Path):
    """Merge a run's new answers into the first seed cache that is a cache (an exported .jsonl.gz file is read only),
    so that later runs reuse them."""
    from answers import seed

    target = next((p for p in SEED_CACHES if p.suffix != ".gz"), None)
    if target is not None:
        seed(run_dir, target)


def run_row(name, out_dir, docs, labels, eval_docs, rounds, teacher_name, j=5, on_round=None, **over):
    """Run (or resume) one lmtx run; returns every round's metrics. on_round(metrics so far): called after each
    round, so long runs write their table as they go."""
    cfg = RunConfig(
        encoder=EncoderConfig(**{"model": "all-MiniLM-L6-v2", **over.pop("encoder", {})}),
        index=IndexConfig(**{"candidates": j, **over.pop("index", {})}),
        retrieval=RetrievalConfig(**over.pop("retrieval", {})),
        teacher=TeacherConfig(name=teacher_name, **over.pop("teacher", {})),
        select=SelectConfig(**over.pop("select", {})),
        train=TrainConfig(**over.pop("train", {})),
        loop=LoopConfig(
            rounds=rounds, docs=str(docs), labels=str(labels), eval_docs=str(eval_docs), seed=0, **over.pop("loop", {})
        ),
    )
    assert not over, over
    seed_cache(out_dir / name)
    res = []
    try:
        for r in iterate(
            cfg, out_dir / name, Runtime(progress=False, threads=2, log=lambda s: print(f"  {s}", flush=True))
        ):
            best = r.metrics.get("best")
            tail = f" (best so far: round {best['round']}, P@1 {best['P@1']:.4f})" if best else ""
            print(
                f"  [{name}] round {r.round}: P@1 {r.metrics.get('P@1', float('nan')):.4f}{tail}"
                f"{' (earlier)' if r.resumed else ''}",
                flush=True,
            )
            res.append(r.metrics)
            share_back(out_dir / name)
            if on_round is not None:
                on_round(res)
    finally:
        share_back(out_dir / name)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "benchmarks" / "debtags"))
    ap.add_argument("--train-docs", type=int, default=500, help="dev docs for simulated and ablation rows")
    ap.add_argument("--real-docs", type=int, default=300, help="dev docs for the real-teacher rows (their cost)")
    ap.add_argument("--q15-docs", type=int, default=60, help="dev docs for the Qwen2.5-Coder-1.5B row")
    ap.add_argument("--eval-docs", type=int, default=2000, help="test docs for evaluation")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-j", type=int, default=5)
    ap.add_argument("--rows", default="baseline,init,mpnet,lmtx,simulated,ablation,rounds")
    ap.add_argument("--long-rounds", type=int, default=5, help="--rounds of the 'rounds' runs (issue: later rounds)")
    ap.add_argument("--runs-only", default=None, help="comma-separated run names of the 'rounds' group to run")
    ap.add_argument("--strong-budget", type=int, default=300, help="strong-teacher pairs of the cascade run")
    ap.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "debtags"))
    ap.add_argument(
        "--seed-cache",
        action="append",
        default=[],
        help="teacher answer caches to merge into each run's cache first (e.g. the teacher_quality one)",
    )
    ap.add_argument(
        "--drop-runs",
        default=None,
        help="comma-separated run names whose rows leave the table (a run "
        "stopped before it finished), then the table is rewritten",
    )
    a = ap.parse_args()
    SEED_CACHES.extend(Path(p) for p in a.seed_cache)
    want = set(a.rows.split(","))
    bench, runs = Path(a.bench), Path(a.runs)
    labels_path = bench / "labels.jsonl"
    labels = load_labels(labels_path)
    out = Path(a.out)
    jp = out.parent / (out.name + ".json")
    old = json.loads(jp.read_text()) if jp.exists() else {"rows": []}
    rows = {r["name"]: r for r in old["rows"]}
    if a.drop_runs:
        drop = set(a.drop_runs.split(","))
        rows = {k: r for k, r in rows.items() if r.get("run") not in drop}
        write(out, a, rows)

    def put(row):
        rows[row["name"]] = row
        write(out, a, rows)

    ev = subsets(bench, runs / "data", a.train_docs, a.eval_docs)["eval"]
    eval_docs = load_docs(ev, labels)

    if "baseline" in want:
        for kind in ("tfidf", "bm25"):
            t0 = time.time()
            m = evaluate(None, eval_docs, labels, ks=(1, 3, 5), baseline=kind)
            put(
                {
                    "name": f"{kind} (doc text vs label description)",
                    "kind": "baseline",
                    "teacher": None,
                    "round": None,
                    **{c: m[c] for c in COLS},
                    "pairs": 0,
                    "seconds": round(time.time() - t0, 1),
                }
            )
    # zero-shot encoders: the lmtx rows start from MiniLM; mpnet (stronger, 5x slower) is there for scale
    for key, enc, name in (
        ("init", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2 zero-shot"),
        ("mpnet", "all-mpnet-base-v2", "all-mpnet-base-v2 zero-shot (not trained here)"),
    ):
        if key in want:
            t0 = time.time()
            m = evaluate(enc, eval_docs, labels, ks=(1, 3, 5))
            put(
                {
                    "name": name,
                    "kind": "init",
                    "teacher": None,
                    "round": 0,
                    **{c: m[c] for c in COLS},
                    "pairs": 0,
                    "seconds": round(time.time() - t0, 1),
                }
            )

    def record(name, kind, teacher, ms, run_name, last_only=False):
        """pairs = distinct (document, label) pairs the teacher judged up to this round: the calls a fresh run
        makes (answers merged from earlier caches are counted too); seconds = this run's own wall time."""
        import pandas as pd

        seen: set = set()
        secs = 0
        for m in ms:
            if m["round"] == 0:
                continue
            j = pd.read_parquet(
                runs / run_name / f"round-{m['round']:02d}" / "judgments.parquet", columns=["doc_id", "label_id"]
            )
            seen |= set(zip(j["doc_id"], j["label_id"]))
            pairs = len(seen)
            secs += sum(m.get("seconds", {}).values())
            if last_only and m is not ms[-1]:
                continue
            put(
                {
                    "name": f"{name}, round {m['round']}",
                    "kind": kind,
                    "teacher": teacher,
                    "round": m["round"],
                    **{c: m.get(c) for c in COLS},
                    "pairs": pairs,
                    "seconds": round(secs, 1),
                    "pseudo_positive_precision": m.get("pseudo_positive_precision"),
                    "teacher_auc": m.get("teacher_auc"),
                    "docs": m.get("docs"),
                    "seeded": bool(SEED_CACHES),
                }
            )

    if "lmtx" in want:
        tr = subsets(bench, runs / "data", a.real_docs, a.eval_docs)["train"]
        ms = run_row(f"qwen0.5b-{a.real_docs}", runs, tr, labels_path, ev, a.rounds, "qwen0.5b", a.j)
        record(
            f"lmtx, teacher Qwen2.5-Coder-0.5B, {a.real_docs} docs", "lmtx", "qwen0.5b", ms, f"qwen0.5b-{a.real_docs}"
        )
        trq = subsets(bench, runs / "data", a.q15_docs, a.eval_docs)["train"]
        ms = run_row(f"qwen1.5b-{a.q15_docs}", runs, trq, labels_path, ev, a.rounds, "qwen1.5b", a.j)
        record(f"lmtx, teacher Qwen2.5-Coder-1.5B, {a.q15_docs} docs", "lmtx", "qwen1.5b", ms, f"qwen1.5b-{a.q15_docs}")
        sim_same = run_row(f"sim0-{a.q15_docs}", runs, trq, labels_path, ev, a.rounds, "simulated:0", a.j)
        record(
            f"SIMULATED perfect teacher, same {a.q15_docs} docs (reference for the 1.5B row)",
            "simulated",
            "simulated:0",
            sim_same,
            f"sim0-{a.q15_docs}",
        )
    if "simulated" in want:
        tr = subsets(bench, runs / "data", a.train_docs, a.eval_docs)["train"]
        for rate in (0.0, 0.1, 0.3):
            t = f"simulated:{rate:g}"
            ms = run_row(f"sim{rate:g}-{a.train_docs}", runs, tr, labels_path, ev, a.rounds, t, a.j)
            record(
                f"SIMULATED teacher, {rate:.0%} flipped, {a.train_docs} docs",
                "simulated",
                t,
                ms,
                f"sim{rate:g}-{a.train_docs}",
            )
    if "ablation" in want:
        tr = subsets(bench, runs / "data", a.train_docs, a.eval_docs)["train"]
        t = "simulated:0.1"
        abl = [
            ("restart from the initial encoder each round", "abl-init", {"train": {"start": "init"}}),
            ("all yes-labels as positives", "abl-all", {"select": {"strategy": "all"}}),
            (
                "paper triplet loss (every in-batch negative) instead of top-k",
                "abl-triplet",
                {"train": {"loss": "triplet"}},
            ),
            ("no false-negative masking", "abl-nomask", {"train": {"fn_mask": False}}),
        ]
        for label, key, over in abl:
            ms = run_row(f"{key}-{a.train_docs}", runs, tr, labels_path, ev, a.rounds, t, a.j, **over)
            record(f"ablation (SIMULATED 10%): {label}", "ablation", t, ms, f"{key}-{a.train_docs}", last_only=True)
    if "rounds" in want:
        tr = subsets(bench, runs / "data", a.real_docs, a.eval_docs)["train"]
        names_labels = runs / "data" / "labels-names.jsonl"
        if not names_labels.exists():
            names_labels.write_text("".join(json.dumps({"id": l.id, "name": l.name}) + "\n" for l in labels.labels))
        R = a.long_rounds
        before = {"select": {"strategy": "similarity", "union": False}, "loop": {"guard_docs": 0}}
        nomerge = {"train": {"merge_init": 0.0}}  # the defaults before weight merging with the initial encoder
        fresh = {"train": {"carry_optimizer": False}}  # the runs made before AdamW's state carried across rounds
        long_runs = [
            # (run, description, labels file, label text, teacher, overrides)
            ("q05-default", "lmtx defaults, teacher Qwen2.5-Coder-0.5B", labels_path, "description", "qwen0.5b", {}),
            (
                "q05-names-default",
                "lmtx defaults, bare label names, teacher Qwen2.5-Coder-0.5B",
                names_labels,
                "name",
                "qwen0.5b",
                {},
            ),
            (
                "q05-nomerge",
                "lmtx defaults before train.merge_init (merge_init 0), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                nomerge,
            ),
            (
                "q05-names-nomerge",
                "lmtx defaults before train.merge_init, bare label names, teacher Qwen2.5-Coder-0.5B",
                names_labels,
                "name",
                "qwen0.5b",
                nomerge,
            ),
            (
                "q15-nomerge",
                "lmtx defaults before train.merge_init, teacher Qwen2.5-Coder-1.5B",
                labels_path,
                "description",
                "qwen1.5b",
                nomerge,
            ),
            (
                "q05-epochs2",
                "lmtx defaults + train.epochs 2 (four optimizer steps a round instead of two), teacher "
                "Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                {"train": {"epochs": 2}},
            ),
            (
                "q15-default",
                "lmtx defaults, teacher Qwen2.5-Coder-1.5B (the strongest offline teacher)",
                labels_path,
                "description",
                "qwen1.5b",
                {},
            ),
            (
                "q15-w08",
                "lmtx defaults + select.fusion w:0.8 (the teacher's weight in the fused pick; the best fixed "
                "weight for this teacher in the fusion_weight.md replay), teacher Qwen2.5-Coder-1.5B",
                labels_path,
                "description",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}},
            ),
            (
                "q15-w08-epochs2",
                "as q15-w08, train.epochs 2 (more training per round, with the strong teacher)",
                labels_path,
                "description",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}, "train": {"epochs": 2}},
            ),
            (
                "q15-w08-epochs3",
                "as q15-w08, train.epochs 3",
                labels_path,
                "description",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}, "train": {"epochs": 3}},
            ),
            (
                "q15-w08-epochs2-nametext",
                "as q15-w08-epochs2, the encoder embeds label names (encoder.label_text "
                "name: zero-shot P@1 0.401 vs 0.380) while the teacher still reads name and description",
                labels_path,
                "name",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}, "train": {"epochs": 2}, "encoder": {"label_text": "name"}},
            ),
            (
                "q05-epochs2-merged",
                "lmtx defaults (merge_init 0.5) + train.epochs 2, teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                {"train": {"epochs": 2}},
            ),
            (
                "q15-w08-mpnet",
                "as q15-w08, student all-mpnet-base-v2 (110M parameters, 5x MiniLM) instead of all-MiniLM-L6-v2",
                labels_path,
                "description",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}, "encoder": {"model": "all-mpnet-base-v2"}},
            ),
            (
                "sim0-default",
                "SIMULATED perfect teacher (the bound for q05-default), lmtx defaults",
                labels_path,
                "description",
                "simulated:0",
                {},
            ),
            (
                "sim0-nomerge",
                "SIMULATED perfect teacher (the bound for q05-nomerge), lmtx defaults before train.merge_init",
                labels_path,
                "description",
                "simulated:0",
                nomerge,
            ),
            (
                "q05-freshopt",
                "lmtx defaults but a fresh AdamW each round (before train.carry_optimizer), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                fresh,
            ),
            (
                "q05-names-freshopt",
                "lmtx defaults but a fresh AdamW each round, bare label names, teacher Qwen2.5-Coder-0.5B",
                names_labels,
                "name",
                "qwen0.5b",
                fresh,
            ),
            (
                "q05-minsteps8",
                "lmtx defaults + train.min_steps 8 (small rounds shrink the batch to 32), fresh AdamW "
                "each round, teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                {"train": {"min_steps": 8, "carry_optimizer": False}},
            ),
            (
                "q05-distill",
                "lmtx defaults + listwise distillation (--distill 1), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                {"train": {"distill": 1.0}},
            ),
            (
                "q05-before",
                "the recipe before fusion/guard (teacher's yes, most similar; no union, no guard), "
                "teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "description",
                "qwen0.5b",
                before,
            ),
            (
                "q05-names-before",
                "the recipe before fusion/guard, bare label names, teacher Qwen2.5-Coder-0.5B",
                names_labels,
                "name",
                "qwen0.5b",
                before,
            ),
            (
                "q05-cascade",
                f"lmtx defaults (fresh AdamW each round) + cascade: Qwen2.5-Coder-1.5B on at most "
                f"{a.strong_budget} pairs",
                labels_path,
                "description",
                "qwen0.5b",
                {"teacher": {"strong": "qwen1.5b", "strong_budget": a.strong_budget}, **fresh},
            ),
            # hybrid retrieval (retrieval.mode auto, fused candidates): the defaults since the *-hybrid runs
            (
                "q05-hybrid",
                "lmtx defaults with hybrid retrieval (BM25 + dense; candidates at dense weight 0.65; "
                "each encoder's weight chosen label-free on the guard documents), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"retrieval": {"hubness": 0.0}},  # made before retrieval.hubness
            ),
            (
                "q05-hybrid-densecand",
                "lmtx defaults with hybrid retrieval, but the teacher's candidates are the encoder's own top-j "
                "(retrieval.candidate_weight 1), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"retrieval": {"candidate_weight": 1.0, "hubness": 0.0}},
            ),
            (
                "q05-std",
                "lmtx defaults since retrieval.standardize labels (each side standardized over every label; "
                "candidates at dense weight 0.8; priors 0.8 as fetched, 0.9 trained), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"train": {"hard_negatives": False}, "retrieval": {"hubness": 0.0}},  # before q05-hardneg
            ),
            (
                "q05-hardneg",
                "q05-std + train.hard_negatives (each document's judged candidates the teacher said no to join its "
                "negatives; the default since this run), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"train": {"hard_negatives": True}, "retrieval": {"hubness": 0.0}},  # before retrieval.hubness
            ),
            (
                "q05-hubness",
                "q05-hardneg + retrieval.hubness 0.5 (CSLS: each label's cosine less half its mean cosine with its "
                "10 nearest training documents; measured, not made the default), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"retrieval": {"hubness": 0.5}},
            ),
            (
                "q05-hubcand",
                "q05-hardneg + retrieval.candidate_hubness 0.5 (the hubness penalty on the teacher's candidates only; "
                "the run's own ranking without it), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"retrieval": {"candidate_hubness": 0.5}},
            ),
            (
                "q05-j10",
                "q05-hardneg with j = 10 candidates per document (lmtx's default until this run; the other rows "
                "ask 5), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"index": {"candidates": 10}},
            ),
            (
                "q05-paper",
                "q05-hardneg with the teacher shown each label's name only (--prompt paper; the default paper-desc "
                "adds the description: prompts_eval_q05.md), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"teacher": {"prompt": "paper"}},
            ),
            (
                "q05-both",
                "q05-hardneg with teacher.describe both (each pair asked with and without the label's description, "
                "P(yes) averaged; the default since this run), teacher Qwen2.5-Coder-0.5B",
                labels_path,
                "name+description",
                "qwen0.5b",
                {"teacher": {"describe": "both"}},
            ),
            (
                "q15-hybrid-strong",
                "the former configs/strong-teacher.toml (fusion w:0.8, epochs 2) with hybrid retrieval, teacher "
                "Qwen2.5-Coder-1.5B",
                labels_path,
                "name+description",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}, "train": {"epochs": 2}},
            ),
            (
                "q15-both",
                "the former configs/strong-teacher.toml (fusion w:0.8, epochs 2) with today's defaults (hybrid retrieval, "
                "teacher.describe both, retrieval.taught shrink), teacher Qwen2.5-Coder-1.5B",
                labels_path,
                "name+description",
                "qwen1.5b",
                {"select": {"fusion": "w:0.8"}, "train": {"epochs": 2}, "teacher": {"describe": "both"}},
            ),
            (
                "q15-defaults",
                "lmtx's defaults as they stand (hybrid retrieval, teacher.describe both, retrieval.taught shrink; "
                "not the strong-teacher recipe), teacher Qwen2.5-Coder-1.5B",
                labels_path,
                "name+description",
                "qwen1.5b",
                {"teacher": {"describe": "both"}},
            ),
            (
                "sim0-hybrid",
                "SIMULATED perfect teacher (the bound for q05-hybrid), lmtx defaults with hybrid retrieval",
                labels_path,
                "name+description",
                "simulated:0",
                {},
            ),
        ]
        only = set(a.runs_only.split(",")) if a.runs_only else None
        for run_name, desc, lab, ltext, teacher, over in long_runs:
            if only and run_name not in only:
                continue
            rd = runs / f"{run_name}-{a.real_docs}x{R}"
            # rows made before teacher.describe showed the description as each template writes it
            over = {**over, "teacher": {"describe": "yes", **over.get("teacher", {})}}

            def progress(ms, rd=rd, run_name=run_name, desc=desc, ltext=ltext, teacher=teacher):
                record_rounds(put, rd, run_name, desc, ltext, teacher, R, ms)
                write(out, a, rows)  # the table grows round by round (a long run may outlive the session)

            run_row(rd.name, runs, tr, lab, ev, R, teacher, a.j, on_round=progress, **over)
    write(out, a, rows)


def record_rounds(put, run_dir: Path, run_name, desc, label_text, teacher, rounds, ms):
    """One row per round: the round's own encoder and the best (promoted) one a user of the run gets; pairs =
    every distinct pair any teacher judged up to that round (candidates, union, guard, cascade)."""
    import pandas as pd

    weak, guard, strong = set(), set(), set()
    secs = 0.0
    for m in ms:
        r = m["round"]
        kind = ("simulated" if teacher.startswith("simulated") else "lmtx") if r else "init"
        row = {
            "name": f"{run_name}: {desc}, round {r}",
            "kind": kind,
            "run": run_name,
            "round": r,
            "rounds": rounds,
            "label_text": label_text,
            "teacher": teacher,
            **{c: m.get(c) for c in COLS},
        }
        if r > 0:
            rd = run_dir / f"round-{r:02d}"
            j = pd.read_parquet(rd / "judgments.parquet")
            weak |= set(zip(j["doc_id"], j["label_id"]))
            if "p_strong" in j:
                s = j[j["p_strong"].notna()]
                strong |= set(zip(s["doc_id"], s["label_id"]))
            if (rd / "guard.parquet").exists():
                g = pd.read_parquet(rd / "guard.parquet")
                guard |= set(zip(g["doc_id"], g["label_id"]))
            secs += sum(m.get("seconds", {}).values())
            best = m.get("best") or {"round": r, **{c: m.get(c) for c in ("P@1", "P@3", "P@5", "nDCG@5")}}
            row.update(
                {
                    "best_round": best["round"],
                    "best_P@1": best.get("P@1"),
                    "best_P@5": best.get("P@5"),
                    "promoted": m.get("promoted", True),
                    "guard": (m.get("guard") or {}).get("reason"),
                    "teacher_auc": m.get("teacher_auc"),
                    "student_auc": m.get("student_auc"),
                    "fused_auc": m.get("fused_auc"),
                    "strong_teacher_auc": m.get("strong_teacher_auc"),
                    "pseudo_positive_precision": m.get("pseudo_positive_precision"),
                    "pseudo_positive_precision_teacher_only": m.get("pseudo_positive_precision_teacher_only"),
                    # recomputed from the round's label-free views with the current threshold (lmtx.learn.fuse.teacher_weaker)
                    "views": m.get("views"),
                    "teacher_weaker": _teacher_weaker((m.get("views") or {}).get("teacher")),
                    "docs": m.get("docs"),
                    "guard_docs": (m.get("guard") or {}).get("docs"),
                    "merge_init": m.get("merge_init", 0.0),
                    "unmerged_P@1": (m.get("unmerged") or {}).get("P@1"),
                }
            )
        ret = m.get("retrieval")
        if ret:  # hybrid retrieval: dense, lexical and the run's choice side by side, and the best weight on gold
            by_w = ret.get("P@1_by_weight", {})
            fin = ret.get("final") or {}
            row.update(
                {
                    "dense_P@1": ret["dense"]["P@1"],
                    "lexical_P@1": ret["lexical"]["P@1"],
                    "final_P@1": fin.get("P@1"),
                    "final_R@10": fin.get("R@10"),
                    "dense_R@10": ret["dense"]["R@10"],
                    "chosen_weight": fin.get("dense_weight"),
                    "best_weight_on_gold": ret.get("best_weight_on_gold"),
                    "best_weight_P@1": max(by_w.values()) if by_w else None,
                    "R@10_by_weight": ret.get("R@10_by_weight"),
                    "label_free": (m.get("retrieval_choice") or {}).get("label_free"),
                }
            )
        row.update(
            {
                "pairs": len(weak | guard) + len(strong),
                "pairs_by_teacher": {teacher: len(weak | guard), **({"qwen1.5b": len(strong)} if strong else {})},
                "seconds": round(secs, 1),
                "seeded": bool(SEED_CACHES),
            }
        )
        put(row)


def write(out: Path, a, rows: dict):
    budget = {
        "long_rounds": a.long_rounds,
        "strong_budget": a.strong_budget,
        "train_docs_simulated_and_ablation": a.train_docs,
        "train_docs_qwen0.5b": a.real_docs,
        "train_docs_qwen1.5b": a.q15_docs,
        "eval_docs": a.eval_docs,
        "candidates_j": a.j,
        "rounds": a.rounds,
        "encoder": "all-MiniLM-L6-v2",
        "split": "train on dev (labels unused), evaluate on test",
        "machine": "2-core CPU, no GPU",
    }
    order = {"baseline": 0, "init": 1, "lmtx": 2, "simulated": 3, "ablation": 4}
    ordered = sorted(rows.values(), key=lambda r: (order[r["kind"]], r["name"]))
    teachers = []
    for f in sorted((ROOT / "benchmarks" / "results").glob("teacher_quality*.json")):
        for t in json.loads(f.read_text())["rows"]:
            rule = t["rules"].get("rel:0.02", {})
            teachers.append(
                {
                    "teacher": t["name"],
                    "prompt": t["prompt"],
                    "auc": t["auc"],
                    "pairs_per_s": t["pairs_per_s"],
                    "yes_precision": rule.get("precision"),
                    "yes_recall": rule.get("recall"),
                    "pseudo_positive_precision": rule.get("pseudo_positive_precision"),
                    "top_p_yes_is_gold": t["top_p_yes_is_gold"],
                    "top_similarity_is_gold": t["top_similarity_is_gold"],
                    "pairs": t["pairs"],
                }
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / (out.name + ".json")).write_text(
        json.dumps({"budget": budget, "rows": ordered, "teachers": teachers}, indent=1)
    )
    lines = [
        "# debtags: lmtx against its starting point",
        "",
        f"Train on {a.real_docs} (real teachers; {a.q15_docs} for the 1.5B) or {a.train_docs} (simulated, ablations) "
        f"`dev` documents without labels; evaluate on the first {a.eval_docs} `test` documents "
        f"(by md5 of the id); j = {a.j} candidates; all-MiniLM-L6-v2 start; lmtx defaults (top-k softmax-weighted "
        f"loss, warm start, most-similar yes-label, false-negative masking, decision rel:0.02) unless the row "
        f"says otherwise; 2-core CPU.",
        "SIMULATED rows answer from gold labels: they bound what a teacher of that quality can buy, "
        "they are not results of a real teacher. Teacher pairs: distinct (document, label) pairs judged up to "
        "that round, i.e. the teacher calls of a fresh run; seconds: wall time of the run up to that round on a "
        "shared 2-core machine, evaluation on the test docs after every round included (a row marked 'seeded' "
        "reused teacher answers from an earlier cache, so its seconds understate a fresh run).",
        "",
        "| row | kind | P@1 | P@3 | P@5 | R@5 | nDCG@5 | PSP@5 | teacher pairs (distinct, cumulative) | seconds (this run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [r for r in ordered if "run" not in r]:
        vals = " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), (int, float)) else "-" for c in COLS)
        seeded = " (seeded)" if r.get("seeded") else ""
        lines.append(f"| {r['name']} | {r['kind']} | {vals} | {r['pairs']} | {r['seconds']:.0f}{seeded} |")
    if teachers:
        lines += [
            "",
            "Teachers on real debtags dev pairs (benchmarks/teacher_quality.py: 60 dev docs x top-5 MiniLM "
            "candidates; decision rel:0.02; pseudo-positive = most similar yes-label):",
            "",
            "| teacher | prompt | AUC | yes-precision | yes-recall | pseudo-positive precision | teacher top-1 is gold "
            "| encoder top-1 is gold | pairs/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in teachers:
            f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(
                f"| {t['teacher']} | {t['prompt']} | {t['auc']:.3f} | {f(t['yes_precision'])} | {f(t['yes_recall'])} | "
                f"{f(t['pseudo_positive_precision'])} | {f(t['top_p_yes_is_gold'])} | {f(t['top_similarity_is_gold'])} | "
                f"{f(t['pairs_per_s'])} |"
            )
    runs = sorted((r for r in ordered if "run" in r), key=lambda r: (r["run"], r["round"]))
    if runs:
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines += [
            "",
            "## Rounds: does the run keep improving? (real teachers, 300 dev docs, 2,000 test docs)",
            "",
            "Each run is one `lmtx iterate` with the named recipe. *P@1 (round)*: the round's own encoder; "
            "*P@1 (run)*: the best promoted encoder so far, which `lmtx evaluate/tag --model RUN` use (the "
            "guard decides label-free, on held-out training documents). AUCs: teacher P(yes), student "
            "similarity and the fused score against gold on the round's judged pairs; pseudo-positive precision: "
            "share of the round's positives that are gold, with the fused selection and with the teacher-only "
            "rule on the same pairs. Pairs: every distinct pair any teacher judged so far (candidates, guard, "
            "cascade). *unmerged*: with train.merge_init (the default since the *-nomerge runs), the P@1 of the "
            "trained weights before their merge with the initial encoder.",
            "",
            "| run | label text | round | P@1 (round) | unmerged | P@1 (run) | best round | promoted | teacher AUC "
            "| student AUC | fused AUC | pseudo-pos. precision fused / teacher-only | teacher weaker | pairs "
            "| seconds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            if r["round"] == 0:
                lines.append(
                    f"| {r['run']} | {r['label_text']} | 0 | {f(r['P@1'])} | - | {f(r['P@1'])} | 0 | - | - "
                    f"| - | - | - | - | 0 | 0 |"
                )
                continue
            pp = f"{f(r.get('pseudo_positive_precision'))} / {f(r.get('pseudo_positive_precision_teacher_only'))}"
            lines.append(
                f"| {r['run']} | {r['label_text']} | {r['round']} | {f(r['P@1'])} | "
                f"{f(r.get('unmerged_P@1'))} | {f(r.get('best_P@1'))} | "
                f"{r.get('best_round')} | {'yes' if r.get('promoted') else 'no'} | {f(r.get('teacher_auc'))} | "
                f"{f(r.get('student_auc'))} | {f(r.get('fused_auc'))} | {pp} | "
                f"{'yes' if r.get('teacher_weaker') else 'no'} | {r['pairs']} | {r['seconds']:.0f}"
                f"{' (seeded)' if r.get('seeded') else ''} |"
            )
    hyb = [r for r in runs if r.get("dense_P@1") is not None]
    if hyb:  # (hyb is a part of runs: f is defined above)
        lines += [
            "",
            "## Hybrid retrieval: dense, lexical and the run's choice (same runs, same 2,000 test docs)",
            "",
            "*dense*: the round's encoder alone; *lexical*: BM25 over the label texts (the same every round); "
            "*chosen*: the ranking the run hands out, at the dense weight it chose label-free (the teacher's "
            "ratings of each weight's top-1 on the guard's held-out documents; 1 = dense only); *best on gold*: "
            "the weight that would have scored best on these test documents (reported, never used). Gap: chosen "
            "minus the better of dense-only and the best hybrid weight. q15-both and q15-defaults were made with "
            "retrieval.taught shrink (the default); the other runs were made before it and hand out every label "
            "at the one weight; what they hand out with shrink is replayed in [taught.md](taught.md).",
            "",
            "| run | round | dense P@1 | lexical P@1 | chosen weight | chosen P@1 | best weight on gold | its P@1 "
            "| gap | dense R@10 | chosen R@10 | pairs |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in hyb:
            gap = (
                r["final_P@1"] - max(r["dense_P@1"], r["best_weight_P@1"] or 0)
                if r.get("final_P@1") is not None
                else None
            )
            cw = "-" if r.get("chosen_weight") is None else f"{r['chosen_weight']:g}"
            lines.append(
                f"| {r['run']} | {r['round']} | {f(r['dense_P@1'])} | {f(r['lexical_P@1'])} | {cw} | "
                f"{f(r.get('final_P@1'))} | {r.get('best_weight_on_gold')} | {f(r.get('best_weight_P@1'))} | "
                f"{'-' if gap is None else f'{gap:+.3f}'} | {f(r.get('dense_R@10'))} | {f(r.get('final_R@10'))} "
                f"| {r['pairs']} |"
            )
    (out.parent / (out.name + ".md")).write_text("\n".join(lines) + "\n")

    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
