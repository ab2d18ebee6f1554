"""Teacher quality on real debtags dev pairs: AUC, decision rules, speed, prefix-reuse speed-up.

    python benchmarks/teacher_quality.py --teachers smollm2,qwen0.5b --docs 60 -j 5
writes benchmarks/results/teacher_quality.json and .md. Pairs: the top-j labels of the initial encoder
(all-MiniLM-L6-v2) for dev documents chosen by a fixed seed, exactly as round 1 of the loop draws them.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.evaluation.teacher_eval import candidate_pairs, evaluate_teacher  # noqa: E402
from lmtx.search.encoder import load_encoder  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.cache import AnswerCache  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402
from lmtx.teacher.registry import make_teacher  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "benchmarks" / "debtags"))
    ap.add_argument("--teachers", default="smollm2,qwen0.5b")
    ap.add_argument("--prompts", default="paper-desc")
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("-j", type=int, default=5)
    ap.add_argument("--speed-docs", type=int, default=8, help="docs for the prefix-reuse on/off timing (0: skip)")
    ap.add_argument("--cache", default=str(ROOT / ".lmtx" / "bench-cache.sqlite"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_quality"))
    a = ap.parse_args()

    labels = load_labels(Path(a.bench) / "labels.jsonl")
    docs = [d for d in load_docs(Path(a.bench) / "docs.jsonl", labels)]
    import hashlib

    dev = sorted((d for d in docs), key=lambda d: hashlib.md5(d.id.encode()).hexdigest())
    split = {json.loads(l)["id"]: json.loads(l)["split"] for l in open(Path(a.bench) / "docs.jsonl")}
    dev = [d for d in dev if split[d.id] == "dev"][: a.docs]
    enc = load_encoder("all-MiniLM-L6-v2")
    pairs, frame = candidate_pairs(enc, dev, labels, a.j)
    cache = AnswerCache(a.cache)
    rows = []
    for tname in a.teachers.split(","):
        for pname in a.prompts.split(","):
            tpl = load_template(pname)
            t = make_teacher(tname, tpl, threads=2)
            r = evaluate_teacher(t, tpl, pairs, frame, cache)
            r.pop("_p_yes")
            r.update({"name": tname, "prompt": pname})
            if a.speed_docs and hasattr(t, "prefix_reuse"):
                sub = [p for p in pairs if p.doc_id in {d.id for d in dev[: a.speed_docs]}]
                speed = {}
                for reuse in (True, False):
                    t.prefix_reuse, t.prompt_tokens = reuse, 0
                    t0 = time.time()
                    t.score(sub)
                    speed["on" if reuse else "off"] = {
                        "pairs_per_s": len(sub) / (time.time() - t0),
                        "tokens": t.prompt_tokens,
                    }
                speed["speedup"] = speed["on"]["pairs_per_s"] / speed["off"]["pairs_per_s"]
                speed["pairs"] = len(sub)
                r["prefix_reuse"] = speed
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "rules"}), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "docs": len(dev),
        "candidates": a.j,
        "pairs": len(pairs),
        "encoder": "all-MiniLM-L6-v2",
        "machine": "2-core CPU",
        "rows": rows,
    }
    (out.parent / (out.name + ".json")).write_text(json.dumps(meta, indent=1))
    lines = [
        f"# Teacher quality on debtags dev pairs ({len(dev)} docs x top-{a.j} MiniLM candidates = {len(pairs)} pairs)",
        "",
        "| teacher | prompt | AUC | mean P(yes) gold / non-gold | top-P(yes) is gold | top-sim is gold | pairs/s | prefix reuse speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pr = r.get("prefix_reuse", {})
        lines.append(
            f"| {r['name']} | {r['prompt']} | {r['auc']:.3f} | {r['mean_p_yes_gold']:.2f} / {r['mean_p_yes_nongold']:.2f} | "
            f"{r['top_p_yes_is_gold']:.2f} | {r['top_similarity_is_gold']:.2f} | "
            f"{(r['pairs_per_s'] or 0):.2f} | {pr.get('speedup', float('nan')):.2f}x |"
        )
    lines += [
        "",
        "Decision rules (yes vs gold; pseudo-positive = most similar yes-label):",
        "",
        "| teacher | prompt | rule | yes-rate | precision | recall | F1 | docs taught | pseudo-pos precision | gold positives/doc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for rule, v in r["rules"].items():
            lines.append(
                f"| {r['name']} | {r['prompt']} | {rule} | {v['yes_rate']:.2f} | {v['precision']:.2f} | {v['recall']:.2f} | "
                f"{v['f1']:.2f} | {v['docs_taught']} | {v['pseudo_positive_precision']:.2f} | {v['gold_positives_per_doc']:.2f} |"
            )
    (out.parent / (out.name + ".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
