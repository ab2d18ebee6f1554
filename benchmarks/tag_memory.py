"""Tagging a corpus larger than what is held in memory: peak RSS for 10k vs 100k documents.

    python benchmarks/tag_memory.py --sizes 10000,100000

Generates short synthetic documents (written line by line, never held as a list), runs `lmtx tag` with
all-MiniLM-L6-v2 in a subprocess per size, and reads the child's peak RSS. If tagging streams, the
peak does not grow with the corpus. Writes benchmarks/results/tag_memory.json and .md.
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORDS = (
    "audio video player editor library server client network mail web game strategy puzzle font python "
    "perl java database science math kernel driver security shell terminal desktop graphics image text "
    "converter viewer backup monitor chat browser compiler debugger documentation plugin"
).split()


def corpus(path: Path, n: int, seed: int = 0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))})
                + "\n"
            )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--labels", default=str(ROOT / "data" / "sample" / "labels.jsonl"))
    ap.add_argument("--work", default="/tmp/lmtx-tag-memory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tag_memory"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in map(int, a.sizes.split(",")):
        docs = work / f"docs-{n}.jsonl"
        if not docs.exists():
            corpus(docs, n)
        out = work / f"tags-{n}.parquet"
        out.unlink(missing_ok=True)
        code = (
            "import resource, sys; from lmtx.cli import app; sys.argv=['lmtx'] + sys.argv[1:]\n"
            "try:\n    app()\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        t0 = time.time()
        p = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "tag",
                "--model",
                "all-MiniLM-L6-v2",
                "--labels",
                a.labels,
                "--docs",
                str(docs),
                "--out",
                str(out),
                "--top-k",
                "5",
                "--chunk-docs",
                "4096",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
        )
        secs = time.time() - t0
        if p.returncode != 0:
            raise SystemExit(p.stderr[-3000:])
        peak = int([l for l in p.stdout.splitlines() if l.startswith("PEAK_RSS_KB")][-1].split()[1])
        import pyarrow.parquet as pq

        rows.append(
            {
                "docs": n,
                "input_mb": docs.stat().st_size / 2**20,
                "rows_out": pq.ParquetFile(out).metadata.num_rows,
                "peak_rss_mb": peak / 1024,
                "seconds": secs,
                "docs_per_s": n / secs,
            }
        )
        print(rows[-1], flush=True)
    res = {
        "encoder": "all-MiniLM-L6-v2",
        "chunk_docs": 4096,
        "top_k": 5,
        "labels": 411,
        "machine": "2-core CPU",
        "rows": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / (out.name + ".json")).write_text(json.dumps(res, indent=1))
    md = [
        "# lmtx tag: peak memory vs corpus size",
        "",
        "all-MiniLM-L6-v2, 411 labels, top-5, chunks of 4,096 docs, 2-core CPU (wall time includes loading the model).",
        "",
        "| docs | input MB | output rows | peak RSS MB | seconds | docs/s |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['docs']} | {r['input_mb']:.1f} | {r['rows_out']} | {r['peak_rss_mb']:.0f} | {r['seconds']:.0f} | {r['docs_per_s']:.0f} |"
        for r in rows
    ]
    (out.parent / (out.name + ".md")).write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
