"""Hybrid retrieval without a teacher: dense, BM25 and their fusion at every weight, and which candidates buy more
gold per teacher pair (a union of each side's top labels, or the fused top-j).

    python benchmarks/hybrid.py                       # the sample and debtags, the encoder as fetched
    python benchmarks/hybrid.py --encoder runs/demo   # any encoder or run folder (its best round)
    python benchmarks/hybrid.py --corpora pypi-102k   # pypi-sources: every gold label + 100,000 others

Writes benchmarks/results/hybrid.json and benchmarks/results/hybrid.md (rows keyed by corpus and encoder; a rerun
replaces its own rows). Its rows are measured with each side standardized over its own top-200 (retrieval.standardize
pool, how lmtx fused when they were written); benchmarks/standardize.py sets that beside the standardization over
every label that lmtx uses now.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "benchmarks"

from lmtx.config import RetrievalConfig  # noqa: E402
from lmtx.evaluation.evaluate import resolve_model  # noqa: E402
from lmtx.evaluation.metrics import ranking_metrics  # noqa: E402
from lmtx.search.encoder import embed, label_embeddings, load_encoder  # noqa: E402
from lmtx.search.hybrid import build_pools  # noqa: E402

POOL = RetrievalConfig.pool
STANDARDIZE = "pool"  # the scale hybrid.md's rows are on (see the docstring)
from lmtx.search.index import exact_topk  # noqa: E402
from lmtx.search.lexical import lexical_index  # noqa: E402
from lmtx.store.data import LabelSet, load_docs, load_labels  # noqa: E402

GRID = (1.0, 0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.4, 0.35, 0.3, 0.2, 0.0)


def corpus(name: str):
    """(eval docs, train docs, labels) of a named corpus."""
    if name == "sample":
        labels = load_labels(ROOT / "data/sample/labels.jsonl")
        return (
            load_docs(ROOT / "data/sample/eval.jsonl", labels),
            load_docs(ROOT / "data/sample/docs.jsonl", labels),
            labels,
        )
    if name == "debtags":
        labels = load_labels(SHARED / "debtags/labels.jsonl")
        return (
            load_docs(SHARED / "debtags/docs.jsonl", labels, split="test"),
            load_docs(SHARED / "debtags/docs.jsonl", labels, split="dev"),
            labels,
        )
    if name == "pypi-102k":
        full = load_labels(SHARED / "pypi-sources/labels.jsonl.gz")
        test = load_docs(SHARED / "pypi-sources/docs.jsonl", full, split="test")
        dev = load_docs(SHARED / "pypi-sources/docs.jsonl", full, split="dev")
        gold = {l for d in test + dev for l in d.labels}
        key = lambda l: hashlib.md5(l.id.encode()).hexdigest()  # noqa: E731
        others = sorted((l for l in full.labels if l.id not in gold), key=key)[:100_000]
        keep = {l.id for l in others} | gold
        labels = LabelSet([l for l in full.labels if l.id in keep])
        return test, dev, labels
    raise SystemExit(f"unknown corpus {name!r}")


def measure(name: str, encoder: str, label_text: str, js=(5, 10)) -> dict:
    t0 = time.time()
    docs, train, labels = corpus(name)
    docs = [d for d in docs if d.labels]
    path = resolve_model(encoder)
    model = load_encoder(path)
    lemb = label_embeddings(model, labels, label_text, cache_for=path)
    lex = lexical_index(labels, label_text)
    out = {
        "corpus": name,
        "encoder": encoder,
        "label_text": label_text,
        "docs": len(docs),
        "labels": len(labels),
        "pool": POOL,
    }
    gold = [set(d.labels) for d in docs]
    ids = labels.ids
    for part, ds in (("eval", docs), ("train", [d for d in train if d.labels])):
        texts = [d.text for d in ds]
        demb = embed(model, texts)
        d_idx, d_sim = exact_topk(demb, lemb, POOL)
        l_idx, l_sc = lex.topk(texts, POOL)
        pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lex, texts, STANDARDIZE)
        g = [set(d.labels) for d in ds]
        if part == "eval":
            by_w = {}
            for w in GRID:
                idx, _ = pools.rank(w, 10)
                m = ranking_metrics([[ids[i] for i in row] for row in idx], gold)
                by_w[str(w)] = {k: round(m[k], 4) for k in ("P@1", "P@5", "R@10", "nDCG@5")}
            out["by_weight"] = by_w
        # candidates for the teacher (train docs): gold among each doc's j candidates, per pair
        cand = {}
        for j in js:
            rows = {}
            for w in (1.0, 0.8, 0.65, 0.5, 0.35, 0.0):
                idx, _ = pools.rank(w, j)
                rows[f"fused w {w}"] = idx
            half = (j + 1) // 2
            dl = pools.rank(1.0, POOL)[0]
            ll = pools.rank(0.0, POOL)[0]
            uni = []
            for a, b in zip(dl, ll):
                pick = list(dict.fromkeys(list(a[:half]) + list(b[:j])))[:j]  # dense's best half, lexical fills
                uni.append(pick)
            rows["union (dense j/2 + lexical)"] = np.array(uni)
            cand[str(j)] = {
                k: round(float(np.mean([len(set(ids[i] for i in r) & gg) > 0 for r, gg in zip(v, g)])), 4)
                for k, v in rows.items()
            }
        out[f"candidate_recall_{part}"] = cand
    out["seconds"] = round(time.time() - t0, 1)
    return out


def lexical_scale() -> dict:
    """The BM25 index over all 783,728 pypi-sources label texts: build (once), reload, top-200 per document, pair
    scores, peak memory of this process."""
    import resource
    import shutil

    from lmtx.search.encoder import fingerprint_labels
    from lmtx.store.assets import lmtx_home

    labels = load_labels(SHARED / "pypi-sources/labels.jsonl.gz")
    docs = load_docs(SHARED / "pypi-sources/docs.jsonl", labels, split="test")[:500]
    shutil.rmtree(lmtx_home() / "lexical" / fingerprint_labels(labels, "name+description"), ignore_errors=True)
    rss = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # noqa: E731
    before = rss()
    t0 = time.time()
    lex = lexical_index(labels, "name+description")
    build = time.time() - t0
    t0 = time.time()
    lex = lexical_index(labels, "name+description")
    reload = time.time() - t0
    texts = [d.text for d in docs]
    t0 = time.time()
    idx, sc = lex.topk(texts, POOL)
    topk = time.time() - t0
    t0 = time.time()
    ps = lex.pair_scores(texts, np.repeat(np.arange(len(texts)), POOL), idx.ravel())
    pairs = time.time() - t0
    p1 = float(np.mean([labels.ids[i[0]] in set(d.labels) for i, d in zip(idx, docs)]))
    return {
        "labels": len(labels),
        "build_s": round(build, 1),
        "reload_s": round(reload, 1),
        "top200_ms_per_doc": round(1000 * topk / len(texts), 1),
        "pair_scores_per_s": round(ps.size / pairs),
        "pair_vs_topk_max_abs_diff": float(np.abs(ps.reshape(idx.shape) - sc).max()),
        "bm25_P@1_first_500_test_docs": round(p1, 3),
        "peak_rss_gb_before": before,
        "peak_rss_gb_after": rss(),
    }


def table(rows: list[dict], scale: dict | None = None) -> str:
    lines = [
        "# Hybrid retrieval without a teacher",
        "",
        "Written by `benchmarks/hybrid.py`. P@1 of the fused ranking at each dense weight w (1 = the encoder "
        "alone, 0 = BM25 alone); each side's top-200 labels per document, z-scored per document (lmtx.search.hybrid).",
        "",
    ]
    ws = [str(w) for w in GRID]
    lines += [
        "| corpus | encoder | label text | docs | labels | " + " | ".join(f"w {w}" for w in ws) + " |",
        "|---|---|---|---|---|" + "---|" * len(ws),
    ]
    for r in rows:
        best = max(ws, key=lambda w: r["by_weight"][w]["P@1"])
        cells = [
            (f"**{r['by_weight'][w]['P@1']:.3f}**" if w == best else f"{r['by_weight'][w]['P@1']:.3f}") for w in ws
        ]
        lines.append(
            f"| {r['corpus']} | {r['encoder']} | {r['label_text']} | {r['docs']:,} | {r['labels']:,} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "R@10 at each weight:",
        "",
        "| corpus | encoder | " + " | ".join(f"w {w}" for w in ws) + " |",
        "|---|---|" + "---|" * len(ws),
    ]
    for r in rows:
        lines.append(
            f"| {r['corpus']} | {r['encoder']} | " + " | ".join(f"{r['by_weight'][w]['R@10']:.3f}" for w in ws) + " |"
        )
    lines += [
        "",
        "Candidates for the teacher: share of documents with a gold label among their j candidates (the "
        "same number of teacher pairs in every column).",
        "",
    ]
    for r in rows:
        for part in ("train", "eval"):
            for j, c in r[f"candidate_recall_{part}"].items():
                if not lines[-1].startswith("|"):
                    pass
                keys = list(c)
                lines += [
                    f"{r['corpus']} ({r['encoder']}, {part} docs), j = {j}:",
                    "",
                    "| " + " | ".join(keys) + " |",
                    "|" + "---|" * len(keys),
                    "| " + " | ".join(f"{c[k]:.3f}" for k in keys) + " |",
                    "",
                ]
    if scale:
        lines += [
            "## The lexical index at 783,728 labels (pypi-sources)",
            "",
            "`python benchmarks/hybrid.py --corpora scale`: BM25 over every label text, one process, 2-core CPU.",
            "",
            "| " + " | ".join(scale) + " |",
            "|" + "---|" * len(scale),
            "| " + " | ".join(str(v) for v in scale.values()) + " |",
            "",
        ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default="sample,debtags")
    ap.add_argument("--encoder", default="all-MiniLM-L6-v2")
    ap.add_argument("--label-text", default="name+description")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/hybrid"))
    a = ap.parse_args()
    jpath = Path(a.out + ".json")
    saved = json.loads(jpath.read_text()) if jpath.exists() else {}
    rows, scale = (saved, None) if isinstance(saved, list) else (saved.get("rows", []), saved.get("lexical_scale"))
    for name in a.corpora.split(","):
        if name == "scale":
            scale = lexical_scale()
            print(json.dumps(scale), flush=True)
            jpath.write_text(json.dumps({"rows": rows, "lexical_scale": scale}, indent=1))
            Path(a.out + ".md").write_text(table(rows, scale))
            continue
        r = measure(name, a.encoder, a.label_text)
        print(json.dumps({k: r[k] for k in ("corpus", "encoder", "by_weight")})[:2000], flush=True)
        rows = [x for x in rows if (x["corpus"], x["encoder"], x["label_text"]) != (name, a.encoder, a.label_text)]
        rows.append(r)
        jpath.write_text(json.dumps({"rows": rows, "lexical_scale": scale}, indent=1))
        Path(a.out + ".md").write_text(table(rows, scale))

    print(f"wrote {jpath} and {a.out}.md")


if __name__ == "__main__":
    main()
