"""The pypi-sources benchmark: 3,363 Debian package texts against 783,728 PyPI projects (labels).

    python benchmarks/pypi_sources.py --stages speed          # label encoding per backend (a 20k sample)
    python benchmarks/pypi_sources.py --stages equal          # P@1 per backend on gold + 100k labels
    python benchmarks/pypi_sources.py --stages baselines      # TF-IDF, BM25 on the full label set
    python benchmarks/pypi_sources.py --stages tag,index      # HNSW build, lmtx tag docs/s, recall vs exact
    python benchmarks/pypi_sources.py --stages runs           # rows of the lmtx run folders (see RUNS)
    python benchmarks/pypi_sources.py --stages memory         # iterate's memory by step, 100k labels (MEMORY_RUNS)

Each stage runs in its own process when called alone (its peak RSS is that process's); each updates
benchmarks/results/pypi-sources.json and rewrites pypi-sources.md, so stages can be run in any order and
rerun. The lmtx rows come from ordinary run folders under benchmarks/runs/pypi/, made with the commands in
RUNS (train on `dev` without labels, evaluate on all of `test` every round).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.store.rundir import peak_rss_gb  # noqa: E402

BENCH = ROOT.parent / "shared" / "benchmarks" / "pypi-sources"
WORK = ROOT / "benchmarks" / "runs" / "pypi"
OUT = ROOT / "benchmarks" / "results" / "pypi-sources"
ENCODER = "all-MiniLM-L6-v2"
# the lmtx rows: run folder -> (kind, the command that made it)
RUNS = {
    "q05-sources": (
        "lmtx",
        "lmtx iterate --docs benchmarks/runs/pypi/dev.jsonl --labels "
        "../shared/benchmarks/pypi-sources/labels.jsonl.gz --eval-docs benchmarks/runs/pypi/test.jsonl "
        "--teacher qwen0.5b --prompt sources -j 5 --eval-sample 0 --rounds N "
        "--out benchmarks/runs/pypi/q05-sources",
    ),
    "sim0-sources": ("simulated", "(same) --teacher simulated:0 --out benchmarks/runs/pypi/sim0-sources"),
    # hybrid retrieval (the defaults since; the two runs above predate it and rank with the encoder alone)
    "q05-hybrid": (
        "lmtx",
        "(same as q05-sources, current defaults: hybrid retrieval) --out benchmarks/runs/pypi/q05-hybrid",
    ),
    "sim0-hybrid": ("simulated", "(same) --teacher simulated:0 --out benchmarks/runs/pypi/sim0-hybrid"),
    # the hybrid defaults since standardize.md (every label's scale, weights 0.8 / 0.9, candidates 0.8), and four
    # epochs a round (round_steps.md: a round here is 5 optimizer steps an epoch)
    "q05-std-e4": (
        "lmtx",
        "(same as q05-hybrid, defaults of standardize.md) --epochs 4 --out benchmarks/runs/pypi/q05-std-e4",
    ),
    # hard negatives (train.hard_negatives, the default since debtags' q05-hardneg), one epoch a round; the teacher
    # cache starts as a copy of q05-std-e4's (the same round-1 candidates), so its seconds understate a fresh run
    "q05-hardneg": (
        "lmtx",
        "(same as q05-hybrid, today's defaults: hard negatives) --out benchmarks/runs/pypi/q05-hardneg; teacher "
        "cache seeded from q05-std-e4",
    ),
    # q05-hardneg made again on a new machine with a fresh teacher cache (no seeding): a fresh run's seconds; its
    # answers are kept in benchmarks/answers/pypi-q05-fresh.jsonl.gz (benchmarks/answers.py)
    "q05-fresh": (
        "lmtx",
        "(same as q05-hybrid, today's defaults: hard negatives) --out benchmarks/runs/pypi/q05-fresh",
    ),
    # the bound for q05-fresh with every default of its day and since (hybrid, hard negatives, retrieval.taught
    # shrink): a teacher that answers from gold, so what is left is what this student can learn from 678 documents
    "sim0-today": (
        "simulated",
        "(same as q05-sources, lmtx defaults of 2026-12-04) --teacher simulated:0 --rounds 3 "
        "--out benchmarks/runs/pypi/sim0-today",
    ),
    # the strongest offline teacher at 783,728 labels, every default of sim0-today; its answers are kept in
    # benchmarks/answers/pypi-q15-today.jsonl.gz
    "q15-today": (
        "lmtx",
        "(same as q05-sources, lmtx defaults of 2026-12-04) --teacher qwen1.5b --rounds 3 "
        "--out benchmarks/runs/pypi/q15-today",
    ),
    # q05-fresh made again with every default of 2026-12-06 but teacher.describe (yes, as q05-fresh asked; both
    # would ask each pair twice), its cache seeded from q05-fresh's answers: what a run of today hands out
    # (retrieval.taught lagged) and R@10 at every dense weight (kept since d88c114); stopped after round 1 (an hour a
    # round on that host), resumable with the same command
    "q05-today": (
        "lmtx",
        "(same as q05-sources, lmtx defaults of 2026-12-06) --describe yes --rounds 3 "
        "--out benchmarks/runs/pypi/q05-today",
    ),
}
# runs whose teacher cache started as a copy of another's: their pairs are the distinct pairs they judged (what a
# fresh run asks), and their seconds understate a fresh run's teacher time
SEEDED = {"q05-hardneg", "q05-today"}
# runs stopped and resumed inside a round (the teacher's answers of the stopped attempt were cached, so the resumed
# round "asked" none): their pairs are also counted from the judged pairs in the run folder
RESUMED = {"sim0-today"}


def split_files():
    WORK.mkdir(parents=True, exist_ok=True)
    out = {s: WORK / f"{s}.jsonl" for s in ("dev", "test")}
    if not all(p.exists() for p in out.values()):
        fs = {s: open(p, "w") for s, p in out.items()}
        for line in open(BENCH / "docs.jsonl"):
            fs[json.loads(line)["split"]].write(line)
        for f in fs.values():
            f.close()
    return out


def load():
    paths = split_files()
    labels = load_labels(BENCH / "labels.jsonl.gz")
    return labels, load_docs(paths["dev"], labels), load_docs(paths["test"], labels)


def result() -> dict:
    p = OUT.with_suffix(".json")
    return json.loads(p.read_text()) if p.exists() else {"budget": {}, "rows": [], "scale": {}}


def save(res: dict):
    from lmtx.store.rundir import write_text

    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_text(OUT.with_suffix(".json"), json.dumps(res, indent=1))
    write_text(OUT.with_suffix(".md"), markdown(res))


def put_row(res: dict, row: dict):
    res["rows"] = [r for r in res["rows"] if r["name"] != row["name"]] + [row]


def metrics_of(ranked, docs) -> dict:
    from lmtx.evaluation.metrics import ranking_metrics

    m = ranking_metrics(ranked, [set(d.labels) for d in docs], ks=(1, 5, 10), recall_ks=(10,))
    return {"P@1": round(m["P@1"], 4), "P@5": round(m["P@5"], 4), "R@10": round(m["R@10"], 4)}


def stage_speed(res, sample: int = 20_000):
    """Labels per second on a fixed sample of the label texts, each backend in this process, one after another."""
    from lmtx.search.encoder import embed, load_encoder
    from lmtx.search.fast_encode import encode_int8

    with gzip.open(BENCH / "labels.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["description"] for line in f]
    step = max(1, len(texts) // sample)
    texts = texts[::step][:sample]
    model = load_encoder(ENCODER)
    speed = {}

    def timed(name, fn):
        t0 = time.time()
        emb = fn()
        speed[name] = round(len(texts) / (time.time() - t0), 1)
        print(f"{name}: {speed[name]} labels/s", flush=True)
        return emb

    ref = timed(
        "torch (SentenceTransformer.encode, batch 32)",
        lambda: model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True),
    )
    timed("torch, batch 64 (lmtx's torch backend)", lambda: embed(model, texts, 64))
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        timed(
            "torch-pool (sentence-transformers multi-process, 2 cpu)",
            lambda: model.encode(texts, pool=pool, batch_size=32, normalize_embeddings=True, convert_to_numpy=True),
        )
    finally:
        model.stop_multi_process_pool(pool)
    one = timed("onnx-int8, 1 process x 2 threads", lambda: encode_int8(model, texts, workers=1))
    two = timed("onnx-int8, 2 processes x 1 thread (lmtx's onnx-int8)", lambda: encode_int8(model, texts, workers=2))
    cos = (np.asarray(ref) * two).sum(1)
    res["scale"]["encode_labels_per_s"] = speed
    res["scale"]["encode_baseline"] = "torch (SentenceTransformer.encode, batch 32)"
    res["scale"]["encode_sample"] = len(texts)
    res["scale"]["int8_cosine_to_float32"] = {
        "mean": round(float(cos.mean()), 4),
        "min": round(float(cos.min()), 4),
        "one_vs_two_processes_max_abs": round(float(np.abs(one - two).max()), 6),
    }
    res["scale"].setdefault("peak_rss_gb", {})["speed"] = round(peak_rss_gb(), 2)


def stage_equal(res, extra: int = 100_000):
    """P@1 of the initial encoder on the test docs with labels encoded by torch vs onnx-int8, on a sub-label-set
    (every gold label + `extra` others, fixed seed): the full set in torch is ~45 min here."""
    from lmtx.search.encoder import embed, load_encoder
    from lmtx.search.fast_encode import encode_int8
    from lmtx.search.index import exact_topk
    from lmtx.store.data import LabelSet

    labels, _, test = load()
    gold = {l for d in test for l in d.labels}
    rng = np.random.default_rng(0)
    ids = labels.ids
    others = [i for i in rng.permutation(len(labels))[: extra + len(gold)] if ids[i] not in gold][:extra]
    keep = sorted({labels.index[g] for g in gold} | set(int(i) for i in others))
    sub = LabelSet([labels.labels[i] for i in keep])
    texts = [l.text("description") for l in sub.labels]
    model = load_encoder(ENCODER)
    demb = embed(model, [d.text for d in test], 64)
    out = {}
    for name, fn in (("torch", lambda: embed(model, texts, 64)), ("onnx-int8", lambda: encode_int8(model, texts))):
        t0 = time.time()
        lemb = fn()
        secs = time.time() - t0
        idx, _ = exact_topk(demb, lemb, 10)
        out[name] = {
            **metrics_of([[sub.ids[i] for i in row] for row in idx], test),
            "labels": len(sub),
            "encode_s": round(secs, 1),
        }
        print(name, out[name], flush=True)
    res["scale"]["equal_p1"] = out
    res["scale"].setdefault("peak_rss_gb", {})["equal"] = round(peak_rss_gb(), 2)


def stage_baselines(res):
    from lmtx.evaluation.evaluate import rank_lexical

    labels, _, test = load()
    for kind in ("tfidf", "bm25"):
        t0 = time.time()
        ranked = rank_lexical(kind, test, labels, 10)
        secs = time.time() - t0
        row = {
            "name": kind,
            "kind": "baseline",
            "teacher": None,
            "round": None,
            "labels": len(labels),
            **metrics_of(ranked, test),
            "pairs": 0,
            "seconds": round(secs, 1),
        }
        print(row, flush=True)
        put_row(res, row)
        res["scale"].setdefault("peak_rss_gb", {})[f"baseline_{kind}"] = round(peak_rss_gb(), 2)
        save(res)


def stage_tag(res):
    """`lmtx tag` at 783k labels with the initial encoder: the label index built (HNSW sized for the label count,
    all cores; the label matrix comes from the cache the run's round 0 filled), then docs/s with it."""
    from lmtx.search.encoder import load_encoder
    from lmtx.store.assets import resolve_encoder
    from lmtx.tag import TagOptions, label_index, tag

    labels, _, test = load()
    opts = TagOptions(top_k=10)
    path = resolve_encoder(ENCODER, lambda s: None)
    t0 = time.time()
    index = label_index(load_encoder(path), path, labels, opts, log=print)
    if index.build_s is not None:  # the graph's build time (a cached index only loads)
        res["scale"]["index_build_s"] = round(index.build_s)
    res["scale"]["index_first_call_s"] = round(time.time() - t0, 1)
    res["scale"]["hnsw"] = {**index.build, "ef_search": index.ef_search}
    res["scale"]["hnsw_recall_at_10_perturbed_labels"] = index.recall_at_10
    out = WORK / "tagged-test.parquet"
    out.unlink(missing_ok=True)
    parts = Path(str(out) + ".parts")
    if parts.exists():
        import shutil

        shutil.rmtree(parts)
    t0 = time.time()
    tag(ENCODER, labels, split_files()["test"], out, opts, log=print)
    secs = time.time() - t0
    res["scale"]["tag_docs_per_s"] = round(len(test) / secs, 1)
    res["scale"]["tag_seconds_2685_docs"] = round(secs, 1)
    res["scale"].setdefault("peak_rss_gb", {})["tag"] = round(peak_rss_gb(), 2)
    print("tag docs/s", res["scale"]["tag_docs_per_s"], flush=True)


def stage_index(res):
    """The HNSW index `tag` built (run stage tag first), recall@10 against exact search with the 2,685 real test
    documents as queries, and exact search speed (what a round's retrieval costs without an index)."""
    from lmtx.search.encoder import embed, load_encoder
    from lmtx.search.index import exact_topk, recall_at_k
    from lmtx.store.assets import resolve_encoder
    from lmtx.tag import TagOptions, label_index

    labels, dev, test = load()
    path = resolve_encoder(ENCODER, lambda s: None)
    model = load_encoder(path)
    index = label_index(model, path, labels, TagOptions(top_k=10), log=print)
    q = embed(model, [d.text for d in test], 64)
    t0 = time.time()
    exact, _ = exact_topk(q, index.emb, 10)
    exact_s = time.time() - t0
    t0 = time.time()
    approx, _ = index.query(q, 10)
    query_s = time.time() - t0
    sc = res["scale"]
    sc.update(
        {
            "labels": len(labels),
            "hnsw_recall_at_10": round(recall_at_k(approx, exact), 4),
            "hnsw_query_docs_per_s": round(len(q) / query_s, 1),
            "exact_search_docs_per_s": round(len(q) / exact_s, 1),
        }
    )
    sc.setdefault("peak_rss_gb", {})["index"] = round(peak_rss_gb(), 2)
    print({k: sc[k] for k in ("hnsw_recall_at_10", "hnsw_query_docs_per_s", "exact_search_docs_per_s")}, flush=True)


def judged_pairs(run: Path, upto: int) -> int:
    """Distinct (document, label) pairs a run's teacher judged in rounds 1..upto: candidates and guard."""
    import pandas as pd

    seen = set()
    for r in range(1, upto + 1):
        for f in ("judgments.parquet", "guard.parquet"):
            p = run / f"round-{r:02d}" / f
            if p.exists():
                t = pd.read_parquet(p, columns=["doc_id", "label_id"])
                seen |= set(zip(t["doc_id"], t["label_id"]))
    return len(seen)


def stage_runs(res):
    """Rows from the run folders: every finished round (its metrics.json), pairs counted over the run so far."""
    for name, (kind, cmd) in RUNS.items():
        run = WORK / name
        if not (run / "manifest.json").exists():
            continue
        pairs = 0
        both = json.loads((run / "config.json").read_text())["teacher"].get("describe") == "both"
        for rd in sorted(run.glob("round-*")):
            mp = rd / "metrics.json"
            if not mp.exists():
                continue
            m = json.loads(mp.read_text())
            r = m["round"]
            pairs += int(m.get("pairs_asked") or 0) + int(m.get("guard_pairs_asked") or 0)
            # a run with teacher.describe both: lmtx counts each pair's two answers (with and without the label's
            # description), so its pairs too are counted from the judged pairs
            if name in SEEDED or name in RESUMED or both:
                pairs = judged_pairs(run, r)
            secs = sum((m.get("seconds") or {}).values()) or None
            shown = f"SIMULATED perfect teacher ({name}) r{r}" if kind == "simulated" else f"{name} r{r}"
            row = {
                "name": shown if r else ("init" if name == "q05-sources" else f"init ({name})"),
                "kind": kind if r else "init",
                "teacher": m.get("teacher") if r else None,
                "round": r,
                "labels": 783728 if m.get("eval_docs") else None,
                "P@1": m.get("P@1"),
                "P@5": m.get("P@5"),
                "R@10": m.get("R@10"),
                "pairs": pairs,
                "seconds": secs and round(secs, 1),
                "eval_docs": m.get("eval_docs"),
                "promoted": m.get("promoted"),
                "command": cmd,
                "seeded": name in SEEDED,
            }
            ret = m.get("retrieval")
            if ret:  # dense (the P@1 above), lexical and the chosen ranking side by side
                fin = ret.get("final") or {}
                row.update(
                    {
                        "lexical_P@1": ret["lexical"]["P@1"],
                        "final_P@1": fin.get("P@1"),
                        "final_R@10": fin.get("R@10"),
                        "chosen_weight": fin.get("dense_weight"),
                        "best_weight_on_gold": ret.get("best_weight_on_gold"),
                        "best_weight_P@1": max((ret.get("P@1_by_weight") or {"-": None}).values()),
                        "P@1_by_weight": ret.get("P@1_by_weight"),
                        "R@10_by_weight": ret.get("R@10_by_weight"),
                    }
                )

            if r:
                s = m.get("seconds") or {}
                non = sum(v for k, v in s.items() if k not in ("teacher", "strong_teacher"))
                row["seconds_by_step"] = s
                row["nonteacher_s"] = round(non, 1)
                if kind == "lmtx" and name == "q05-sources":  # the scale figures come from that real-teacher run
                    by = res["scale"].setdefault("round_nonteacher_by_round", {})
                    by[str(r)] = row["nonteacher_s"]
                    res["scale"]["round_nonteacher_s"] = max(by.values())
            if m.get("peak_rss_gb") is not None:  # recorded by lmtx since the sim0 run (after each round)
                row["peak_rss_gb"] = m["peak_rss_gb"]
                res["scale"].setdefault("peak_rss_gb", {})[f"iterate ({name}, after round {r})"] = m["peak_rss_gb"]
            put_row(res, row)
        if kind == "lmtx":  # label encoding times, from the run's log ("[lmtx] encoded N labels with B in Xs")
            import re

            log = WORK / f"{name}.log"
            times = (
                [
                    float(x)
                    for x in re.findall(r"encoded \d+ labels with [\w-]+ in (\d+)s", log.read_text(errors="replace"))
                ]
                if log.exists()
                else []
            )
            if times and name == "q05-sources":  # the scale figures: that run had the machine to itself
                res["scale"]["encode_labels_s"] = {"per encoding, in run order": times, "min": min(times)}
                by = res["scale"].get("round_nonteacher_by_round", {})
                # round r's own label encoding is the (r+1)-th in the log (round 0 encodes the initial labels)
                res["scale"]["round_nonteacher_over_its_encoding"] = {
                    k: round(v / times[int(k)], 2) for k, v in by.items() if int(k) < len(times)
                }
            elif times:  # other runs' encodings, said apart (they may have shared the machine)
                res["scale"][f"encode_labels_s ({name}; see its note)"] = times


# iterate's memory by step, with and without activation checkpointing (SIMULATED teacher: every step of a real
# round but the teacher's), on 100,000 labels (every gold label of dev + test, then others in a seeded shuffle)
MEMORY_RUNS = {
    "mem100k-sim0": "lmtx iterate --docs benchmarks/runs/pypi/dev.jsonl --labels benchmarks/runs/pypi/labels-100k.jsonl "
    "--eval-docs benchmarks/runs/pypi/test.jsonl --teacher simulated:0 --prompt sources -j 5 "
    "--eval-sample 0 --rounds 2 --set train.checkpointing=off --out benchmarks/runs/pypi/mem100k-sim0",
    "mem100k-sim0-ckpt": "(same, train.checkpointing auto = on at 100k labels) --out benchmarks/runs/pypi/mem100k-sim0-ckpt",
}


def labels_100k(n: int = 100_000) -> Path:
    out = WORK / "labels-100k.jsonl"
    if not out.exists():
        import random

        gold = {l for s in ("dev", "test") for d in map(json.loads, open(WORK / f"{s}.jsonl")) for l in d["labels"]}
        rows, other = [], []
        for line in gzip.open(BENCH / "labels.jsonl.gz", "rt"):
            (rows if json.loads(line)["id"] in gold else other).append(line)
        random.Random(0).shuffle(other)
        out.write_text("".join(rows + other[: n - len(rows)]))
    return out


def stage_memory(res):
    """Peak RSS and memory after each step of the 100k-label runs in MEMORY_RUNS (run them first)."""
    labels_100k()
    out = {}
    for name, cmd in MEMORY_RUNS.items():
        for mp in sorted((WORK / name).glob("round-*/metrics.json")):
            m = json.loads(mp.read_text())
            out.setdefault(name, {"command": cmd, "rounds": {}})["rounds"][str(m["round"])] = {
                "P@1": m.get("P@1"),
                "peak_rss_gb": m.get("peak_rss_gb"),
                "checkpointing": bool((m.get("train") or {}).get("checkpointing")),  # absent = before the setting: off
                "train_and_label_encoding_s": (m.get("seconds") or {}).get("train"),
                "memory_gb_after_step": m.get("memory_gb_after_step"),
            }
    res["scale"]["iterate_memory_100k_labels"] = out


def markdown(res: dict) -> str:
    sc = res.get("scale", {})
    lines = [
        "# pypi-sources: 783,728 labels on one 2-core machine",
        "",
        "Train on the 678 `dev` documents without labels, evaluate on all 2,685 `test` documents; "
        "all-MiniLM-L6-v2; the teacher's pairs count the guard's. SIMULATED rows answer from gold labels "
        "(a bound, not a result). A run marked (seeded) started from a copy of another run's teacher answers: its "
        "pairs are the distinct pairs it judged (a fresh run's teacher calls), its seconds understate a fresh run.",
        "",
        "| row | kind | teacher | round | labels | P@1 | P@5 | R@10 | teacher pairs | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"baseline": 0, "init": 1, "lmtx": 2, "simulated": 3}
    for r in sorted(res.get("rows", []), key=lambda r: (order.get(r["kind"], 9), r["name"])):
        f = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines.append(
            f"| {r['name']} | {r['kind']} | {f(r.get('teacher'))} | {f(r.get('round'))} | {f(r.get('labels'))} | "
            f"{f(r.get('P@1'))} | {f(r.get('P@5'))} | {f(r.get('R@10'))} | {f(r.get('pairs'))} | "
            f"{f(r.get('seconds'))}{' (seeded)' if r.get('seeded') else ''} |"
        )
    hyb = [r for r in res.get("rows", []) if r.get("lexical_P@1") is not None]
    if hyb:
        f = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines += [
            "",
            "## Hybrid retrieval: dense, lexical and the run's choice",
            "",
            "P@1 above is the encoder alone; *chosen* is the ranking the run hands out, at the dense weight it "
            "chose label-free; *best on gold* is reported, never used. These runs were made before "
            "retrieval.taught and hand out every label at the one weight; what they hand out with its default "
            "(shrink) is replayed in [taught.md](taught.md).",
            "",
            "| row | dense P@1 | lexical P@1 | chosen weight | chosen P@1 | chosen R@10 | best weight on gold | "
            "its P@1 | P@1 at dense weight 1 / 0.8 / 0.6 / 0.4 / 0.2 / 0 | R@10 at the same weights ('-': a run "
            "made before R@10 was kept by weight) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        grid = ("1", "0.8", "0.6", "0.4", "0.2", "0")
        for r in sorted(hyb, key=lambda r: r["name"]):
            by, rby = r.get("P@1_by_weight") or {}, r.get("R@10_by_weight") or {}
            lines.append(
                f"| {r['name']} | {f(r.get('P@1'))} | {f(r.get('lexical_P@1'))} | {f(r.get('chosen_weight'))} | "
                f"{f(r.get('final_P@1'))} | {f(r.get('final_R@10'))} | {f(r.get('best_weight_on_gold'))} | "
                f"{f(r.get('best_weight_P@1'))} | {' / '.join(f(by.get(w)) for w in grid)} | "
                f"{' / '.join(f(rby.get(w)) for w in grid)} |"
            )
    lines += ["", "## Scale figures", "", "| figure | value |", "|---|---|"]

    for k, v in sc.get("encode_labels_per_s", {}).items():
        lines.append(f"| labels encoded per second: {k} | {v} |")
    for k in (
        "encode_baseline",
        "encode_sample",
        "int8_cosine_to_float32",
        "equal_p1",
        "encode_labels_s",
        "labels",
        "index_build_s",
        "hnsw",
        "hnsw_recall_at_10",
        "hnsw_recall_at_10_perturbed_labels",
        "hnsw_query_docs_per_s",
        "exact_search_docs_per_s",
        "tag_docs_per_s",
        "tag_seconds_2685_docs",
        "round_nonteacher_s",
        "round_nonteacher_by_round",
        "round_nonteacher_over_its_encoding",
    ):
        if k in sc:
            lines.append(f"| {k} | {json.dumps(sc[k]) if isinstance(sc[k], (dict, list)) else sc[k]} |")
    for k, v in sc.get("peak_rss_gb", {}).items():
        lines.append(f"| peak RSS (GB), {k} | {v} |")
    mem = sc.get("iterate_memory_100k_labels")
    if mem:
        lines += [
            "",
            "## lmtx iterate's memory on 100,000 labels (SIMULATED teacher), by round",
            "",
            "| run | round | checkpointing | P@1 | peak RSS GB | training + label encoding s |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in mem.items():
            for k, v in r["rounds"].items():
                lines.append(
                    f"| {name} | {k} | {v['checkpointing']} | {v['P@1']:.4f} | {v['peak_rss_gb']} | "
                    f"{v['train_and_label_encoding_s']} |"
                )
    return "\n".join(lines) + "\n"


STAGES = {
    "speed": stage_speed,
    "equal": stage_equal,
    "baselines": stage_baselines,
    "index": stage_index,
    "tag": stage_tag,
    "runs": stage_runs,
    "memory": stage_memory,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default="runs")
    a = ap.parse_args()
    res = result()
    res["budget"] = {"encoder": ENCODER, "train_docs": "dev (678)", "eval_docs": "test (2,685)", "machine": "2 cores"}
    for name in a.stages.split(","):
        t0 = time.time()
        STAGES[name](res)
        res["scale"].setdefault("stage_seconds", {})[name] = round(time.time() - t0, 1)
        save(res)


if __name__ == "__main__":
    main()
