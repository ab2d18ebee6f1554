"""Hub labels: does a label-free hubness penalty on the dense side raise P@1 and R@10? Replayed on gold for every
encoder of finished runs (the encoder as fetched and each round's), with no teacher call.

    python benchmarks/hubness.py NAME=RUN_FOLDER [NAME=RUN_FOLDER ...]

A hub is a label close to many documents whatever they say; it takes top-1 from better labels. The penalty is
CSLS's (cross-domain similarity local scaling): each label's hubness r(l) is the mean cosine of its K nearest
*training* documents (the run's own unlabelled documents; no gold, no teacher), and the dense score becomes
cos(d, l) - beta * r(l) (beta 0.5 is CSLS's ranking; 0 is lmtx's before retrieval.hubness). The ranking is lmtx's
own, with exact search (lmtx.search.hybrid with retrieval.hubness = beta: each side's top-pool, the dense one by
cosine, penalized, each side standardized over every label, fused with weight w on the dense side), so every label
set size works as lmtx ranks it. Results go to benchmarks/results/hubness.{json,md}, an encoder at a time (rerun to
resume).
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

from standardize import run_inputs, save_replay  # noqa: E402  (benchmarks/: the same run-folder reading)

from lmtx.config import RetrievalConfig, RunConfig  # noqa: E402
from lmtx.loop.job import guard_split  # noqa: E402
from lmtx.search.encoder import embed, label_embeddings, load_encoder  # noqa: E402
from lmtx.search.hybrid import build_pools, label_hubness, label_moments  # noqa: E402
from lmtx.search.index import exact_topk  # noqa: E402
from lmtx.search.lexical import lexical_index  # noqa: E402
from lmtx.store.data import load_docs  # noqa: E402
from lmtx.store.rundir import write_text  # noqa: E402

BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
WEIGHTS = (1.0, 0.9, 0.8)
K = RetrievalConfig.hubness_k  # lmtx's default
OUT = ROOT / "benchmarks" / "results"


def encoders(run: Path, cfg: RunConfig) -> list[tuple[int, str]]:
    out = [(0, cfg.encoder.model)]
    for d in sorted(run.glob("round-*/encoder")):
        if (d.parent / "metrics.json").exists():  # a finished round
            out.append((int(d.parent.name[6:]), str(d)))
    return out


def replay(spec: str, labels, docs, train_texts, lt: str, lexical, lex_top) -> dict:
    gold = [set(labels.index[g] for g in d.labels if g in labels.index) for d in docs]
    texts = [d.text for d in docs]
    pool = RetrievalConfig.pool
    model = load_encoder(spec)
    lemb = label_embeddings(model, labels, lt, cache_for=spec, progress=False)
    demb = embed(model, texts, 64)
    temb = embed(model, train_texts, 64)
    hub = label_hubness(lemb, temb, K)
    l_idx, l_sc, mu_l, sd_l = lex_top
    d_idx, d_sim = exact_topk(demb, lemb, pool)  # lmtx's dense top-pool: the top cosines
    res = {}
    for beta in BETAS:
        pen = (beta * hub).astype(np.float32) if beta > 0 else None
        moments = label_moments(lemb, penalty=pen)
        pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lexical, texts, "labels", (mu_l, sd_l), moments, pen)
        for w in WEIGHTS:
            top, _ = pools.rank(w, 10)
            p1 = np.mean([t[0] in g for t, g in zip(top, gold)])
            r10 = np.mean([len(set(t.tolist()) & g) / len(g) for t, g in zip(top, gold)])
            res[f"{beta:g}/{w:g}"] = round(float(p1), 4)
            res[f"R10 {beta:g}/{w:g}"] = round(float(r10), 4)
    order = np.argsort(-hub)
    res["hub_top"] = [[labels.labels[i].id, round(float(hub[i]), 3)] for i in order[:5]]
    return res


def render(data: dict) -> str:
    lines = [
        "# A label-free hubness penalty on the dense side (CSLS)",
        "",
        "`python benchmarks/hubness.py NAME=RUN ...` (no teacher call). Dense score `cos(d, l) - beta * r(l)`, "
        f"r(l) the mean cosine of label l's {K} nearest training documents (the run's unlabelled documents); beta 0 "
        "is lmtx's ranking, 0.5 CSLS's. Hybrid: that dense score and BM25, each standardized over every label, "
        "summed with weight w on the dense side (w 1: dense only). P@1, then R@10, on the run's eval documents.",
        "",
        "| run | labels | round | metric | "
        + " | ".join(f"beta {b:g}, w {w:g}" for w in WEIGHTS for b in BETAS)
        + " |",
        "|---|---|---|---|" + "---|" * (len(BETAS) * len(WEIGHTS)),
    ]
    gain = {b: [] for b in BETAS}
    gain10 = {b: [] for b in BETAS}
    for key in sorted(data, key=lambda k: (data[k]["run"], data[k]["round"])):
        e = data[key]
        r = e["res"]
        for metric, pre in (("P@1", ""), ("R@10", "R10 ")):
            lines.append(
                f"| {e['run']} | {e['labels']:,} | {e['round']} | {metric} | "
                + " | ".join(f"{r[f'{pre}{b:g}/{w:g}']:.3f}" for w in WEIGHTS for b in BETAS)
                + " |"
            )
        for b in BETAS:
            gain[b].append(np.mean([r[f"{b:g}/{w:g}"] - r[f"0/{w:g}"] for w in WEIGHTS]))
            gain10[b].append(np.mean([r[f"R10 {b:g}/{w:g}"] - r[f"R10 0/{w:g}"] for w in WEIGHTS]))

    def summary(head: str, gains: dict) -> str:
        return (
            head
            + "; ".join(
                f"beta {b:g}: mean {np.mean(g):+.4f}, min {np.min(g):+.4f}, max {np.max(g):+.4f}"
                for b, g in gains.items()
                if g and b
            )
            + "."
        )

    lines += [
        "",
        summary("Mean change of P@1 against beta 0 (over the three weights), per encoder, by beta: ", gain),
        "",
        summary("The same for R@10: ", gain10),
        "",
        "Labels with the highest r(l), the encoder as fetched: "
        + "; ".join(
            f"{e['run']}: " + ", ".join(f"{i} ({h})" for i, h in e["res"]["hub_top"])
            for e in data.values()
            if e["round"] == 0
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    ap.add_argument("--rounds", default=None, help="comma-separated rounds to replay (default: every finished one)")
    args = ap.parse_args()
    want = None if args.rounds is None else {int(x) for x in args.rounds.split(",")}
    jpath = OUT / "hubness.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {}
    for item in args.runs:
        name, run, cfg, labels, docs = run_inputs(item)
        # the documents the run trains on (its guard's held-out ones excluded), as lmtx takes r(l) from them
        train = [d.text for d in guard_split(load_docs(cfg.loop.docs, labels, cfg.loop.max_docs), cfg)[0]]
        lt = cfg.encoder.label_text
        lexical = lex_top = None
        for r, spec in encoders(run, cfg):
            key = f"{name}/round-{r:02d}"
            if key in data or (want is not None and r not in want):
                continue
            t0 = time.time()
            if lex_top is None:
                lexical = lexical_index(labels, lt)
                lex_top = lexical.topk_stats([d.text for d in docs], RetrievalConfig.pool)
            res = replay(spec, labels, docs, train, lt, lexical, lex_top)
            data[key] = {"run": name, "round": r, "labels": len(labels), "docs": len(docs), "res": res}
            save_replay(jpath, data, render, key, t0)
    write_text(OUT / "hubness.md", render(data))


if __name__ == "__main__":
    main()
