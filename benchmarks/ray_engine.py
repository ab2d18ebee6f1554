"""lmtx on Ray vs the local engine: label encoding and tagging at 783,728 labels (pypi-sources).

    python benchmarks/ray_engine.py                       # every stage not yet in the results (resumable)
    python benchmarks/ray_engine.py --stages tag-ray2     # one stage again
    python benchmarks/ray_engine.py --md                  # redraw the markdown from the JSON

Stages, each in its own process (the parent samples the RSS of that process and every descendant, Ray's raylet,
object store and workers included, every 0.5 s):

- encode-local-full: one round's label encoding on the local engine, all 783,728 labels (lmtx's choice of backend:
  onnx-int8, one process per core). Its matrix is cached under LMTX_HOME; the tag stages reuse it.
- encode-local / encode-ray1 / encode-ray2: the same encoding of the first ENCODE_N labels, local and on Ray with
  1 and 2 actors (one CPU each), so the ratio is measured on the same texts in the same run.
- tag-local / tag-ray1 / tag-ray2: `lmtx tag` of DOCS_N documents against all 783,728 labels (the label index
  lmtx builds once and caches), top-5; the Ray outputs are compared with the local one row by row.

Documents: DOCS_N project descriptions drawn (seed 0) from the label file itself, so their length and vocabulary
are those of the corpus; ids are d0, d1, ... Writes benchmarks/results/ray_engine.{json,md}. The machine's load
average is recorded at each stage's start: a stage that began on a busy machine says so in the table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# RAY_BENCH_* override these for a quick try on a small label file (the children read the same environment)
LABELS = Path(
    os.environ.get("RAY_BENCH_LABELS", ROOT.parent / "shared" / "benchmarks" / "pypi-sources" / "labels.jsonl.gz")
)
WORK = Path(os.environ.get("RAY_BENCH_WORK", ROOT / "benchmarks" / "runs" / "ray-engine"))
OUT = Path(os.environ.get("RAY_BENCH_OUT", ROOT / "benchmarks" / "results" / "ray_engine"))
ENCODER = "all-MiniLM-L6-v2"
DOCS_N = int(os.environ.get("RAY_BENCH_DOCS_N", 100_000))
ENCODE_N = int(os.environ.get("RAY_BENCH_ENCODE_N", 100_000))
STAGES = ["encode-local-full", "encode-local", "encode-ray1", "encode-ray2", "tag-local", "tag-ray1", "tag-ray2"]


# -- the parent: one process per stage, the RSS of its whole tree sampled ------------------------------------------
def _tree_rss_kb(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run_stage(stage: str) -> dict:
    load = os.getloadavg()[0]
    p = subprocess.Popen(
        [sys.executable, __file__, "--child", stage], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    peak = [0]

    def sample():
        while p.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(p.pid))
            time.sleep(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = p.stdout.read()
    p.wait()
    t.join()
    if p.returncode:
        raise SystemExit(f"stage {stage} failed (exit {p.returncode})")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(peak_tree_rss_gb=round(peak[0] / 2**20, 2), load_at_start=round(load, 2))
    return res


# -- the children -----------------------------------------------------------------------------------------------
def _labels():
    from lmtx.store.data import load_labels

    return load_labels(LABELS)


def _docs() -> Path:
    import random

    path = WORK / f"docs-{DOCS_N}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        with gzip.open(LABELS, "rt") as f:
            texts = [json.loads(x).get("description") or "" for x in f]
        rng = random.Random(0)
        picks = rng.sample([t for t in texts if t.strip()], DOCS_N)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for i, t in enumerate(picks):
                f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
        tmp.replace(path)
    return path


def child(stage: str) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from lmtx.search.encoder import load_encoder
    from lmtx.search.fast_encode import encode_labels, resolve_backend
    from lmtx.store.assets import resolve_encoder

    labels = _labels()
    spec = str(resolve_encoder(ENCODER))
    quiet = lambda s: None
    if stage.startswith("encode"):
        from lmtx.config import RunConfig

        label_text = RunConfig().encoder.label_text
        texts = [l.text(label_text) for l in labels.labels]
        if stage == "encode-local-full":
            from lmtx.search.encoder import fingerprint_encoder, fingerprint_labels, label_embeddings
            from lmtx.store.assets import lmtx_home

            model = load_encoder(spec, progress=quiet)
            key = f"{fingerprint_encoder(spec)}-{fingerprint_labels(labels, label_text)}"
            cached = any((lmtx_home() / "label-emb").glob(f"{key}*.npy"))  # then the seconds are a cache read
            t0 = time.time()
            emb = label_embeddings(model, labels, label_text, cache_for=spec, progress=False, log=quiet)
            secs = time.time() - t0
            from lmtx.tag import TagOptions, label_index

            t1 = time.time()  # the index the tag stages load (HNSW at this size), built once from the cached matrix
            label_index(model, spec, labels, TagOptions(top_k=5), log=quiet, label_text=label_text)
            return {
                "labels": len(texts),
                "backend": resolve_backend(model, "auto", len(texts)),
                "seconds": secs,
                "cached": cached,
                "labels_per_s": len(texts) / secs,
                "dim": int(emb.shape[1]),
                "index_s": time.time() - t1,
            }
        texts = texts[:ENCODE_N]
        model = load_encoder(spec, progress=quiet)
        backend = resolve_backend(model, "auto", len(texts))
        t0 = time.time()
        if stage == "encode-local":
            emb, _ = encode_labels(model, texts, backend)
            actors = None
        else:
            from lmtx.search.ray_engine import RayEngine

            actors = int(stage[-1])
            with RayEngine(actors=actors, log=quiet) as eng:
                t1 = time.time()
                emb = eng.encode_labels(spec, texts, backend)
                start = t1 - t0
        secs = time.time() - t0
        import numpy as np

        np.save(WORK / f"{stage}.npy", emb)
        res = {
            "labels": len(texts),
            "backend": backend,
            "actors": actors,
            "seconds": secs,
            "labels_per_s": len(texts) / secs,
        }
        if actors:
            res["ray_start_s"] = start
            local = WORK / "encode-local.npy"
            if local.exists():
                ref = np.load(local)
                res["max_abs_vs_local"] = float(np.abs(ref - emb).max())
                res["min_cosine_vs_local"] = float((ref * emb).sum(1).min())
        return res
    # tag stages
    from lmtx.tag import TagOptions, tag

    docs = _docs()
    out = WORK / f"{stage}.parquet"
    out.unlink(missing_ok=True)
    opts = TagOptions(top_k=5)
    t0 = time.time()
    if stage == "tag-local":
        s = tag(spec, labels, docs, out, opts, progress=False, log=quiet)
        actors = start = None
    else:
        from lmtx.search.ray_engine import RayEngine

        actors = int(stage[-1])
        with RayEngine(actors=actors, log=quiet) as eng:
            start = time.time() - t0
            s = tag(spec, labels, docs, out, opts, progress=False, log=quiet, engine=eng)
    secs = time.time() - t0
    res = {
        "docs": s["docs"],
        "actors": actors,
        "seconds": secs,
        "docs_per_s": s["docs"] / secs,
        "retrieval": s["retrieval"],
        "ray_start_s": start,
    }
    ref = WORK / "tag-local.parquet"
    if actors and ref.exists():
        import numpy as np
        import pandas as pd

        a = pd.read_parquet(ref).sort_values(["doc_id", "rank"]).reset_index(drop=True)
        b = pd.read_parquet(out).sort_values(["doc_id", "rank"]).reset_index(drop=True)
        same = len(a) == len(b) and (a["doc_id"].to_numpy() == b["doc_id"].to_numpy()).all()
        res["rows_local"], res["rows"] = len(a), len(b)
        res["same_docs_and_ranks"] = bool(same)
        if same:
            res["same_label_share"] = float((a["label_id"].to_numpy() == b["label_id"].to_numpy()).mean())
            res["max_abs_score_diff"] = float(np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max())
    return res


# -- results ------------------------------------------------------------------------------------------------------
def write_md(res: dict):
    st = res.get("stages", {})
    lines = [
        "# lmtx on Ray vs the local engine (pypi-sources, 783,728 labels)",
        "",
        "Written by `python benchmarks/ray_engine.py` (its docstring says what each stage does). all-MiniLM-L6-v2; "
        "a local Ray cluster on the same 2-core machine, one CPU per actor; every stage in its own process; peak "
        "RSS is that process's whole tree (Ray's raylet, object store and workers included). *load* is the 1-minute "
        "load average when the stage began; it still carries the previous stage's work (it decays over about a "
        "minute), so it flags a busy machine only where it is well above the previous stage's.",
        "",
        "| stage | items | seconds | per second | ratio to local (same run) | Ray start s | peak tree RSS GB | load | "
        "equal to local |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in STAGES:
        r = st.get(name)
        if not r:
            continue
        rate = r.get("labels_per_s") or r.get("docs_per_s")
        base = st.get("encode-local" if name.startswith("encode") and name != "encode-local-full" else "tag-local")
        ratio = ""
        if r.get("actors") and base:
            ratio = f"{(base.get('labels_per_s') or base.get('docs_per_s')) / rate:.2f}x the time"
        eq = ""
        if "min_cosine_vs_local" in r:
            eq = f"min cosine {r['min_cosine_vs_local']:.4f}"
        if "same_docs_and_ranks" in r:
            eq = (
                f"labels {r['same_label_share']:.4f}, max score diff {r['max_abs_score_diff']:.1e}"
                if r["same_docs_and_ranks"]
                else f"rows differ ({r['rows']} vs {r['rows_local']})"
            )
        items = f"{r.get('labels', r.get('docs'))} {'labels' if 'labels' in r else 'docs'}"
        if r.get("cached"):
            items += " (matrix read from the cache: not an encoding time)"
        if r.get("index_s"):
            items += f"; label index built in {r['index_s']:.0f} s"
        start = f"{r['ray_start_s']:.1f}" if r.get("ray_start_s") else ""
        lines.append(
            f"| {name}{' (partial)' if r.get('partial') else ''} | {items} | {r['seconds']:.0f} | {'' if r.get('cached') else f'{rate:.0f}'} | {ratio} | "
            f"{start} | {r['peak_tree_rss_gb'] if r.get('peak_tree_rss_gb') is not None else 'n/a'} | "
            f"{r['load_at_start'] if r.get('load_at_start') is not None else 'n/a'} | {eq} |"
        )
    if res.get("notes"):
        lines += ["", *res["notes"]]
    lines += ["", *on_paper(st)]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")


# -- on paper: GPU-cluster wall times from the rates measured above and cited hardware rates -------------------------
H100_BF16 = 989e12  # FLOP/s, dense BF16, H100 SXM (NVIDIA's data sheet)
MINILM_FLOP_PER_TOKEN = 2 * 10.6e6  # all-MiniLM-L6-v2: 10.6M non-embedding weights, 2 FLOP each per token
TEACHER_FLOP_PER_TOKEN = 2 * 13e9  # a 13B teacher, prefill


def on_paper(st: dict) -> list[str]:
    """The two estimates issue "past one machine" asks for, each with the rates it assumes and why."""
    tag_local = st.get("tag-local", {})
    tag2 = st.get("tag-ray2") or st.get("tag-ray1") or {}
    # the local engine's encoding rate: the slice's, measured beside the Ray stages (the full encoding may have
    # read its matrix from the cache, or shared the machine)
    enc = st.get("encode-local") or st.get("encode-local-full", {})
    cpu_docs_s = tag_local.get("docs_per_s")
    lines = ["## On paper: GPU clusters", ""]
    # (1) 100M documents on 8 GPU nodes
    docs, tokens = 100e6, 128  # a document cut to 128 tokens (lmtx embeds up to 256; most tagged texts are shorter)
    enc_flop = docs * tokens * MINILM_FLOP_PER_TOKEN
    util = 0.10  # a 6-layer, 384-wide encoder keeps a GPU busy at about a tenth of its peak (small matmuls)
    gpus = 8
    enc_s = enc_flop / (gpus * H100_BF16 * util)
    search_flop = docs * 783_728 * 384 * 2  # exact top-k: one dot product per (document, label)
    search_s = search_flop / (gpus * H100_BF16 * 0.5)  # large matmuls run near half of peak
    lines += [
        "**Tagging 100M documents on 8 GPU nodes (one H100 each) at 783,728 labels.** Encoding: 100M documents x "
        f"{tokens} tokens x {MINILM_FLOP_PER_TOKEN / 1e6:.1f} MFLOP per token = {enc_flop:.1e} FLOP; at 10% of an "
        f"H100's {H100_BF16 / 1e12:.0f} TFLOPS dense BF16 (a small encoder's matmuls do not fill the GPU) on 8 GPUs: "
        f"{enc_s / 60:.0f} minutes. Top-5 by exact search: 100M x 783,728 x 384 x 2 = {search_flop:.1e} FLOP, at "
        f"half of peak on 8 GPUs (large, regular matmuls): {search_s:.0f} seconds; the label matrix (1.2 GB in "
        "float32, 0.6 GB in BF16) fits every GPU, so each actor holds it once (lmtx's actors load the cached index "
        f"once each). {'Encoding' if enc_s > search_s else 'Search'} sets the time: about {(enc_s + search_s) / 60:.0f} "
        "minutes of GPU work on 8 H100s, before reading 100M documents and writing 500M rows (parquet parts, one per "
        "batch, on shared storage), which at these rates is likely the real limit.",
    ]
    if cpu_docs_s:
        lines += [
            "",
            f"Without GPUs, from this run: the local engine tagged {cpu_docs_s:.0f} documents/s on 2 cores (encoding "
            "and HNSW search together); Ray's actors scale that per core they get, so 8 nodes of 32 cores reach about "
            f"{cpu_docs_s / 2 * 32 * 8:,.0f} documents/s if the rate per core holds, and 100M documents take "
            f"{docs / (cpu_docs_s / 2 * 32 * 8) / 3600:.1f} hours"
            + (
                f"; with Ray's own cost as measured here ({tag_local['docs_per_s'] / tag2['docs_per_s']:.2f}x the local "
                f"engine's time on the same machine), {docs / (cpu_docs_s / 2 * 32 * 8) / 3600 * tag_local['docs_per_s'] / tag2['docs_per_s']:.1f} "
                "hours. On 2 cores Ray's actors compete with Ray's own processes for the same two cores, so this ratio "
                "is an upper bound for nodes with many cores."
                if tag2.get("docs_per_s") and tag_local.get("docs_per_s")
                else "."
            ),
        ]
    # (2) one LMTX round on LF-Wikipedia-500K on 8 H100s
    n_docs, j, labels = 30_000, 10, 501_070
    prefix, per_cand = 350, 25  # a Wikipedia article cut to 256 words by the template, and a title + description
    prefill = n_docs * (prefix + j * per_cand)
    no_cache = n_docs * j * (prefix + per_cand)
    rate = [H100_BF16 * u / TEACHER_FLOP_PER_TOKEN for u in (0.4, 0.5)]  # tokens/s per H100, prefill-only batches
    t_lo, t_hi = (prefill / (8 * r) for r in reversed(rate))
    label_flop = labels * 20 * MINILM_FLOP_PER_TOKEN
    lines += [
        "",
        "**One LMTX round on LF-Wikipedia-500K (30,000 documents, j = 10, 501,070 labels, a 13B teacher) on 8 "
        f"H100s.** Teacher: {n_docs * j:,} pairs; with a document's {j} prompts sharing its prefix in the engine's "
        f"prefix cache (about {prefix} tokens of article, the template's 256-word cut, plus about {per_cand} per "
        f"candidate) that is {prefill / 1e6:.0f}M prefill tokens ({no_cache / 1e6:.0f}M without prefix caching). A "
        f"13B model needs {TEACHER_FLOP_PER_TOKEN / 1e9:.0f} GFLOP per prompt token; prefill-only batches reach "
        f"40-50% of the H100's peak, {rate[0]:,.0f}-{rate[1]:,.0f} tokens/s per GPU, and `max_tokens=1` makes "
        f"prefill the whole cost: {t_lo / 60:.1f}-{t_hi / 60:.1f} minutes on 8 GPUs, one engine each "
        f"({no_cache / prefill:.1f}x "
        "that without prefix caching), plus loading the 26 GB of BF16 weights into each engine (a minute or two from "
        f"shared storage). Label encoding: {labels:,} labels x 20 tokens = {label_flop:.1e} FLOP, seconds on one GPU"
        + (
            f" (on this CPU the local engine encodes {enc['labels_per_s']:.0f} labels/s, {labels / enc['labels_per_s'] / 60:.0f} "
            "minutes)"
            if enc.get("labels_per_s")
            else ""
        )
        + f". Retrieval (30,000 x 501,070 exact, {n_docs * labels * 384 * 2:.1e} FLOP) and training (235 steps of "
        "128) take seconds on a GPU. The round is the teacher's: about 3-5 minutes of wall time with weights loaded, the guard's few "
        "thousand pairs included.",
    ]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--child")
    ap.add_argument("--md", action="store_true")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        return
    path = OUT.with_suffix(".json")
    res = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    if not a.md:
        WORK.mkdir(parents=True, exist_ok=True)
        asked = a.stages.split(",")
        for stage in asked:
            if stage in res["stages"] and a.stages == ",".join(STAGES):
                continue  # resumable: the default run skips what is done; a named stage reruns
            print(f"[ray_engine] {stage} ...", flush=True)
            res["stages"][stage] = run_stage(stage)
            print(f"[ray_engine] {stage}: {json.dumps(res['stages'][stage])}", flush=True)
            path.write_text(json.dumps(res, indent=1) + "\n")
            write_md(res)
    write_md(res)


if __name__ == "__main__":
    main()
