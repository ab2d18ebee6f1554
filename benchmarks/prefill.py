"""Pay for teacher answers once, share them between benchmark runs.

    python benchmarks/prefill.py --docs D --labels L --teacher qwen0.5b --top 10 --cache C.sqlite

Asks the teacher about each document's top-N candidates under the initial encoder, rank band by rank
band (every document's ranks 0..4 first, then 5..9, ...), into an ordinary lmtx answer cache. Runs
that later merge this cache (benchmarks/debtags.py --seed-cache) ask only what it lacks; their tables
still count every pair they used as paid (the cache only moves the time). Interrupt and rerun: nothing
asked twice.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.evaluation.teacher_eval import candidate_pairs  # noqa: E402
from lmtx.search.encoder import load_encoder  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.cache import AnswerCache, score_cached  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402
from lmtx.teacher.registry import make_teacher  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--teacher", default="qwen0.5b")
    ap.add_argument("--prompt", default="paper-desc")
    ap.add_argument("--encoder", default="all-MiniLM-L6-v2")
    ap.add_argument("--label-text", default="description")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--band", type=int, default=5, help="ranks asked per pass over the documents")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    labels = load_labels(a.labels)
    docs = load_docs(a.docs, labels)
    all_pairs, frame = candidate_pairs(load_encoder(a.encoder), docs, labels, a.top, a.label_text)
    tpl = load_template(a.prompt)
    teacher = make_teacher(a.teacher, tpl, threads=a.threads)
    cache = AnswerCache(a.cache)
    t0 = time.time()
    for lo in range(0, a.top, a.band):
        band = ((frame["rank"] >= lo) & (frame["rank"] < lo + a.band)).to_numpy()
        pairs = [p for p, keep in zip(all_pairs, band) if keep]  # document by document, as before
        done = [0]

        def tick(n):
            done[0] += n
            if done[0] % 100 < n:
                print(
                    f"  ranks {lo}-{lo + a.band - 1}: {done[0]}/{len(pairs)} pairs, {time.time() - t0:.0f}s", flush=True
                )

        _, asked = score_cached(teacher, tpl.hash, pairs, cache, progress=tick)
        print(
            f"ranks {lo}-{lo + a.band - 1}: asked {asked} of {len(pairs)} pairs ({time.time() - t0:.0f}s)", flush=True
        )
    cache.close()


if __name__ == "__main__":
    main()
