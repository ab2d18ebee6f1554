"""Which teacher weight would have picked the most gold pseudo-positives? A replay over finished runs.

    python benchmarks/fusion_weight.py [NAME=RUN_DIR:GOLD_DOCS ...]

For every round's judged candidates (the run's judgments.parquet: the teacher's P(yes) and the student's
similarity as the run saw them), the fused score w * z_teacher + (1 - w) * z_student (each view centered per
document and scaled, as lmtx.learn.fuse does) picks one pseudo-positive per document; gold only scores the pick.
Also listed: the label-free quantities a fusion rule could read (the teacher's per-document log-odds spread,
the triad estimates r of lmtx.learn.fuse and the weight `--fusion auto` would use). Writes
benchmarks/results/fusion_weight.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from lmtx.learn.fuse import _centered, teacher_logit  # noqa: E402
from lmtx.store.data import gold_of, load_docs  # noqa: E402

W = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
RUNS = {
    "debtags, Qwen2.5-Coder-1.5B, before the merge (q15-nomerge)": (
        ROOT / "benchmarks/runs/q15-nomerge-300x5",
        ROOT / "benchmarks/runs/data/train-300.jsonl",
    ),
    "debtags, Qwen2.5-Coder-1.5B (q15-default)": (
        ROOT / "benchmarks/runs/q15-default-300x5",
        ROOT / "benchmarks/runs/data/train-300.jsonl",
    ),
    "debtags, Qwen2.5-Coder-1.5B, run with w:0.8 (q15-w08)": (
        ROOT / "benchmarks/runs/q15-w08-300x5",
        ROOT / "benchmarks/runs/data/train-300.jsonl",
    ),
    "debtags, Qwen2.5-Coder-0.5B (q05-default)": (
        ROOT / "benchmarks/runs/q05-default-300x5",
        ROOT / "benchmarks/runs/data/train-300.jsonl",
    ),
    "debtags bare label names, Qwen2.5-Coder-0.5B (q05-names-default)": (
        ROOT / "benchmarks/runs/q05-names-default-300x5",
        ROOT / "benchmarks/runs/data/train-300.jsonl",
    ),
    "sample, Qwen2.5-Coder-0.5B (./run.sh default job before the merge)": (
        ROOT / "benchmarks/runs/demo-nomerge",
        ROOT / "data/sample/docs.jsonl",
    ),
    "pypi-sources, Qwen2.5-Coder-0.5B (q05-sources)": (
        ROOT / "benchmarks/runs/pypi/q05-sources",
        ROOT / "benchmarks/runs/pypi/dev.jsonl",
    ),
}


def replay(run: Path, docs: Path) -> list[dict]:
    G = gold_of(load_docs(docs))
    out = []
    for rd in sorted(run.glob("round-*")):
        jp, mp = rd / "judgments.parquet", rd / "metrics.json"
        if not (jp.exists() and mp.exists()):
            continue
        j = pd.read_parquet(jp)
        j = j[j["candidate"]] if "candidate" in j else j
        j = j[j["doc_id"].isin(G)].copy()
        j["y"] = [lab in G[d] for d, lab in zip(j["doc_id"], j["label_id"])]
        doc = j["doc_id"].to_numpy()
        lt = teacher_logit(j["p_yes"].to_numpy())
        zt, zs = _centered(lt, doc), _centered(j["similarity"].to_numpy(float), doc)
        spread = float((pd.Series(lt) - pd.Series(lt).groupby(doc).transform("mean")).std())

        def precision(score):
            top = j.assign(s=score).groupby("doc_id")["s"].idxmax()
            return round(float(j.loc[top, "y"].mean()), 4)

        prec = {str(w): precision(w * zt + (1 - w) * zs) for w in W}
        v = (json.loads(mp.read_text()).get("views") or {}).get("teacher") or {}
        rt, rs = v.get("r_teacher"), v.get("r_student")
        w_auto = None
        if rt and rs:
            a, b = rt / (1 - rt * rt), rs / (1 - rs * rs)
            w_auto = round(a / (a + b), 3)
        best = max(prec.values())
        out.append(
            {
                "round": json.loads(mp.read_text())["round"],
                "docs": int(j["doc_id"].nunique()),
                "teacher_logodds_spread": round(spread, 3),
                "r_teacher": rt,
                "r_student": rs,
                "w_auto": w_auto,
                "precision_by_teacher_weight": prec,
                "best_weights": [w for w, p in prec.items() if p == best],
            }
        )
    return out


def main():
    runs = dict(RUNS)
    for a in sys.argv[1:]:
        name, _, rest = a.partition("=")
        run, _, docs = rest.partition(":")
        runs[name] = (Path(run), Path(docs))
    res = {}
    for name, (run, docs) in runs.items():
        if run.exists() and docs.exists():
            res[name] = {"run": str(Path(run).resolve().relative_to(ROOT)), "rounds": replay(run, docs)}
    out = ROOT / "benchmarks" / "results" / "fusion_weight"
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        "# Teacher weight in the fused selection, replayed on finished runs",
        "",
        "Share of documents whose fused top candidate is gold, for a fixed teacher weight w (fused = w z_teacher"
        " + (1 - w) z_student); best weight(s) in bold. `spread`: the teacher's per-document-centered log-odds "
        "sd; `w auto`: the weight the label-free triad estimate (`--fusion auto`) gives. The default is "
        "w = 0.5 (`--fusion equal`).",
        "",
    ]
    for name, r in res.items():
        lines += [
            f"## {name}",
            "",
            "| round | docs | spread | w auto | " + " | ".join(f"w={w}" for w in W) + " |",
            "|---" * (4 + len(W)) + "|",
        ]
        for x in r["rounds"]:
            cells = [
                f"**{p:.3f}**" if w in x["best_weights"] else f"{p:.3f}"
                for w, p in x["precision_by_teacher_weight"].items()
            ]
            lines.append(
                f"| {x['round']} | {x['docs']} | {x['teacher_logodds_spread']:.2f} | {x['w_auto']} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
