"""How the hybrid ranking puts its two sides on one scale: each document's scores standardized over every label
(``retrieval.standardize labels``) or over each side's own top-200 (``pool``, lmtx before), replayed on gold for
every encoder of finished runs (the encoder as fetched and each round's), with no teacher call.

    python benchmarks/standardize.py NAME=RUN_FOLDER [NAME=RUN_FOLDER ...]

Each run folder's config.json names its labels, eval documents, label text and initial encoder. For each encoder
and both standardizations: P@1 at every dense weight of a grid, and hit@5 / hit@10, the share of documents with a
gold label among the top 5 (the teacher's candidate count) / 10: whether the teacher is shown one at all, not
lmtx.evaluation.metrics' R@k (the share of each document's gold labels), which differs on multi-label corpora.
Results go to benchmarks/results/standardize.{json,md}, an encoder at a time (atomic writes; an encoder already
there is not redone, so an interrupted replay resumes). A 783,728-label encoder takes about 5 minutes on the 2-core
machine when its label matrix is cached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.config import RetrievalConfig, RunConfig  # noqa: E402
from lmtx.search.encoder import embed, label_embeddings, load_encoder  # noqa: E402
from lmtx.search.hybrid import build_pools, label_moments  # noqa: E402
from lmtx.search.index import exact_topk  # noqa: E402
from lmtx.search.lexical import lexical_index  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.store.rundir import write_text  # noqa: E402

GRID = (1.0, 0.97, 0.95, 0.92, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
MODES = ("pool", "labels")
# the defaults compared: (standardize, weight for the encoder as fetched, weight once trained, candidate weight)
BEFORE = ("pool", 0.6, 0.9, 0.65)
NOW = (
    "labels",
    RunConfig().retrieval.zero_shot_weight,
    RunConfig().retrieval.dense_weight,
    RunConfig().retrieval.candidate_weight,
)
OUT = ROOT / "benchmarks" / "results"
POOL = RetrievalConfig.pool


def run_inputs(item: str):
    """NAME=RUN_FOLDER -> (name, run folder, its config, its labels, its gold-labelled eval documents)."""
    name, _, folder = item.partition("=")
    run = Path(folder)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    labels = load_labels(cfg.loop.labels)
    docs = [d for d in load_docs(cfg.loop.eval_docs or cfg.loop.docs, labels) if d.labels]
    return name, run, cfg, labels, docs


def save_replay(jpath: Path, data: dict, render, key: str, t0: float) -> None:
    """After each replayed encoder: the JSON beside it and its markdown table rewritten, the encoder's seconds said."""
    write_text(jpath, json.dumps(data, indent=1) + "\n")
    write_text(jpath.with_suffix(".md"), render(data))
    print(f"{key}: {time.time() - t0:.0f} s", flush=True)


def encoders(run: Path, cfg: RunConfig) -> list[tuple[int, str]]:
    out = [(0, cfg.encoder.model)]
    for d in sorted(run.glob("round-*/encoder")):
        out.append((int(d.parent.name[6:]), str(d)))
    return out


def replay_encoder(spec: str, labels, docs, lt: str, lex, lex_top) -> dict:
    texts = [d.text for d in docs]
    gold = [set(labels.index[g] for g in d.labels if g in labels.index) for d in docs]
    model = load_encoder(spec)
    lemb = label_embeddings(model, labels, lt, cache_for=spec, progress=False)
    demb = embed(model, texts, 64)
    d_idx, d_sim = exact_topk(demb, lemb, POOL)
    l_idx, l_sc, mu_l, sd_l = lex_top
    moments = label_moments(lemb)
    res = {}
    for mode in MODES:
        pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lex, texts, mode, (mu_l, sd_l), moments)
        by_w = {}
        for w in GRID:
            idx, _ = pools.rank(w, 10)
            p1 = np.mean([row[0] in g for row, g in zip(idx, gold)])
            hit5 = np.mean([bool(g & set(row[:5].tolist())) for row, g in zip(idx, gold)])
            hit10 = np.mean([bool(g & set(row.tolist())) for row, g in zip(idx, gold)])
            by_w[f"{w:g}"] = [round(float(p1), 4), round(float(hit5), 4), round(float(hit10), 4)]
        res[mode] = by_w
    return res


def at(res: dict, mode: str, w: float, k: int = 0) -> float:
    return res[mode][f"{w:g}"][k]


def best(res: dict, mode: str, k: int = 0) -> tuple[float, float]:
    w = max(res[mode], key=lambda x: (res[mode][x][k], float(x)))
    return float(w), res[mode][w][k]


def render(data: dict) -> str:
    b, n = BEFORE, NOW
    lines = [
        "# Standardizing the hybrid ranking's two sides: over every label or over each side's top-200",
        "",
        "`python benchmarks/standardize.py NAME=RUN ...` (no teacher call). Each encoder of a run (round 0: as "
        "fetched) ranks the run's eval documents by `w * z(cosine) + (1 - w) * z(BM25)`, each side standardized per "
        "document either over its own top-200 (`pool`, lmtx before) or over every label (`labels`, exact: the "
        "cosine's mean and sd from the label embeddings' moments, BM25's from its full score vector). *hit@5*: the "
        "share of documents with a gold label among the top 5, the teacher's candidates at the candidate weight.",
        "",
        f"Defaults compared: before = {b[0]}, weight {b[1]:g} as fetched, {b[2]:g} trained, candidates at {b[3]:g}; "
        f"now = {n[0]}, weight {n[1]:g} as fetched, {n[2]:g} trained, candidates at {n[3]:g}.",
        "",
        "| run | round | labels | docs | dense P@1 | BM25 P@1 | P@1 before | P@1 now | best on gold, pool (w) | "
        "best on gold, labels (w) | cand. hit@5 before | cand. hit@5 now |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sums = {"before": 0.0, "now": 0.0, "r5b": 0.0, "r5n": 0.0}
    regret = {"before": 0.0, "now": 0.0}
    for key in sorted(data, key=lambda k: (data[k]["run"], data[k]["round"])):
        e = data[key]
        r = e["res"]
        wb = b[1] if e["round"] == 0 else b[2]
        wn = n[1] if e["round"] == 0 else n[2]
        pb, pn = at(r, b[0], wb), at(r, n[0], wn)
        bp, bl = best(r, "pool"), best(r, "labels")
        r5b, r5n = at(r, b[0], b[3], 1), at(r, n[0], n[3], 1)
        sums["before"] += pb
        sums["now"] += pn
        sums["r5b"] += r5b
        sums["r5n"] += r5n
        regret["before"] = max(regret["before"], bp[1] - pb)
        regret["now"] = max(regret["now"], bl[1] - pn)
        lines.append(
            f"| {e['run']} | {e['round']} | {e['labels']:,} | {e['docs']:,} | {at(r, 'pool', 1.0):.3f} | "
            f"{at(r, 'pool', 0.0):.3f} | {pb:.3f} | {pn:.3f} | {bp[1]:.3f} ({bp[0]:g}) | {bl[1]:.3f} ({bl[0]:g}) | "
            f"{r5b:.3f} | {r5n:.3f} |"
        )
    k = len(data)
    lines += [
        "",
        f"Over {k} encoders: P@1 summed {sums['before']:.3f} before, {sums['now']:.3f} now "
        f"({sums['now'] - sums['before']:+.3f}); candidate hit@5 summed {sums['r5b']:.3f} before, {sums['r5n']:.3f} "
        f"now; largest loss to the same standardization's best weight on gold: {regret['before']:.3f} before, "
        f"{regret['now']:.3f} now.",
        "",
        "## P@1 by dense weight",
        "",
        "| run | round | standardize | " + " | ".join(f"{w:g}" for w in GRID) + " |",
        "|---|---|---|" + "---|" * len(GRID),
    ]
    for key in sorted(data, key=lambda k: (data[k]["run"], data[k]["round"])):
        e = data[key]
        for mode in MODES:
            lines.append(
                f"| {e['run']} | {e['round']} | {mode} | "
                + " | ".join(f"{at(e['res'], mode, w):.3f}" for w in GRID)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    args = ap.parse_args()
    jpath = OUT / "standardize.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {}
    for item in args.runs:
        name, run, cfg, labels, docs = run_inputs(item)
        lt = cfg.encoder.label_text
        lex, lex_top = None, None
        # the encoder as fetched on the same labels and documents is one row, whichever run it came from
        source = [cfg.encoder.model, *(str(Path(*Path(p).parts[-2:])) for p in (cfg.loop.labels, cfg.loop.eval_docs))]
        for r, spec in encoders(run, cfg):
            key = f"{name}/round-{r:02d}"
            same = r == 0 and any(e.get("source") == source for e in data.values())
            if key in data or same:
                continue
            t0 = time.time()
            if lex is None:
                lex = lexical_index(labels, lt)
                lex_top = lex.topk_stats([d.text for d in docs], POOL)
            res = replay_encoder(spec, labels, docs, lt, lex, lex_top)
            data[key] = {"run": name, "round": r, "labels": len(labels), "docs": len(docs), "res": res}
            if r == 0:
                data[key]["source"] = source  # the initial encoder, label file and eval file (last two path parts)
            save_replay(jpath, data, render, key, t0)
    write_text(OUT / "standardize.md", render(data))


if __name__ == "__main__":
    main()
