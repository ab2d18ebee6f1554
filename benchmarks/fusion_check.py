"""How good is each pseudo-positive rule, on real teacher answers? (gold used only to score the rules)

    python benchmarks/fusion_check.py --docs D --labels L --cache C.sqlite [--teacher qwen0.5b] [--name NAME]

For every document, the top-j candidates of the initial encoder with the teacher's cached P(yes) (pairs
the cache lacks are skipped, never asked). Reports, per rule, the share of documents whose chosen
pseudo-positive is a gold label, and per view the AUC against gold next to the label-free estimate the
loop would use (lmtx.learn.fuse). Writes benchmarks/results/fusion_check.{json,md} (one row per --name).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.evaluation.metrics import auc  # noqa: E402
from lmtx.evaluation.teacher_eval import candidate_pairs  # noqa: E402
from lmtx.learn.fuse import fuse  # noqa: E402
from lmtx.learn.select import decide  # noqa: E402
from lmtx.search.encoder import load_encoder  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.cache import AnswerCache  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402
from lmtx.teacher.registry import teacher_model_id  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--teacher", default="qwen0.5b")
    ap.add_argument("--prompt", default="paper-desc")
    ap.add_argument("--encoder", default="all-MiniLM-L6-v2")
    ap.add_argument("-j", type=int, default=5)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fusion_check"))
    a = ap.parse_args()

    labels = load_labels(a.labels)
    docs = load_docs(a.docs, labels)
    ltexts = [l.text("description") for l in labels.labels]
    pairs, frame = candidate_pairs(load_encoder(a.encoder), docs, labels, a.j)
    got = AnswerCache(a.cache).get_many(teacher_model_id(a.teacher), load_template(a.prompt).hash, pairs)
    frame["p_yes"] = [g.p_yes if g is not None else np.nan for g in got]
    # documents with an answer missing are skipped, never asked
    j = frame[frame.groupby("doc")["p_yes"].transform(lambda x: x.notna().all())].reset_index(drop=True)
    n_docs = j["doc"].nunique()
    res = {
        "name": a.name or f"{a.teacher} on {Path(a.docs).name} / {Path(a.labels).name}",
        "docs": n_docs,
        "pairs": len(j),
        "j": a.j,
        "teacher": a.teacher,
        "prompt": a.prompt,
    }

    def prec(choice_col: str, rows_: pd.DataFrame) -> float:
        pick = rows_.loc[rows_.groupby("doc")[choice_col].idxmax()]
        return float(pick["gold"].mean())

    j["yes"] = decide(j, "rel:0.02")
    yes = j[j["yes"]]
    res["precision"] = {
        "teacher yes (rel:0.02), most similar (lmtx before)": prec("similarity", yes),
        "teacher top P(yes)": prec("p_yes", j),
        "student top similarity": prec("similarity", j),
    }
    for mode in ("auto", "equal"):
        f, q = fuse(j, [d.text for d in docs], ltexts, mode)
        j[f"fused_{mode}"] = f
        res["precision"][f"fused ({mode})"] = prec(f"fused_{mode}", j)
        if mode == "auto":
            res["estimate"] = q.to_dict()
    res["auc"] = {
        "teacher": auc(j["p_yes"].to_numpy(), j["gold"].to_numpy()),
        "student": auc(j["similarity"].to_numpy(), j["gold"].to_numpy()),
        "fused (auto)": auc(j["fused_auto"].to_numpy(), j["gold"].to_numpy()),
    }
    res["docs_with_gold_candidate"] = float(j.groupby("doc")["gold"].any().mean())
    out = Path(a.out)
    jp = out.with_suffix(".json")
    old = json.loads(jp.read_text()) if jp.exists() else {"rows": []}
    rows_out = [r for r in old["rows"] if r["name"] != res["name"]] + [res]
    jp.parent.mkdir(parents=True, exist_ok=True)
    jp.write_text(json.dumps({"rows": rows_out}, indent=1))
    lines = [
        "# Pseudo-positive rules on real teacher answers",
        "",
        "Top-j candidates of the initial encoder; share of documents whose pseudo-positive is gold (gold only "
        "scores the rules). `estimate`: the label-free view quality lmtx.learn.fuse computes (r = estimated "
        "correlation with relevance), next to the AUC against gold.",
        "",
    ]
    for r in rows_out:
        lines += [
            f"## {r['name']}",
            "",
            f"{r['docs']} documents, {r['pairs']} pairs, j = {r['j']}; "
            f"documents with a gold candidate: {r['docs_with_gold_candidate']:.3f}",
            "",
            "| rule | pseudo-positive precision |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.3f} |" for k, v in r["precision"].items()]
        e = r["estimate"]
        lines += [
            "",
            "| view | AUC vs gold | label-free r | fusion weight |",
            "|---|---|---|---|",
            f"| teacher | {r['auc']['teacher']:.3f} | {e['r_teacher'] or 0:.3f} | {e['w_teacher']:.2f} |",
            f"| student | {r['auc']['student']:.3f} | {e['r_student'] or 0:.3f} | {e['w_student']:.2f} |",
            f"| fused (auto) | {r['auc']['fused (auto)']:.3f} | | |",
            "",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
