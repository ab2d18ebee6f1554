"""teacher.describe: does the teacher rank gold better with the label's description in the prompt, without it, or
with both answers averaged? Measured on gold, on the pairs the loop asks about.

    python benchmarks/describe.py [--teachers qwen0.5b,qwen1.5b] [--cache runs/describe-cache.sqlite]

Two label sets, the same teacher code path as `lmtx iterate` (lmtx.teacher.cache.describe_forms: the run's template,
the pair's description left out for "no", both forms' P(yes) averaged for "both"):

* debtags: 60 dev documents (benchmarks/runs/data/train-300.jsonl, written by debtags.py) x the initial encoder's
  top 5 labels = 300 pairs, prompt paper-desc (labels are tags with readable names; their descriptions open with
  the tag's facet).
* pypi-sources: 100 dev documents x their round-1 candidates of the q05-fresh run at 783,728 labels = 500 pairs
  (benchmarks/answers/pypi-describe-pairs.jsonl.gz, kept so that no 783k-label encoding is needed), prompt sources
  (labels are package names; the description is "name: summary").

Writes benchmarks/results/describe.json and describe.md. Answers go through an answer cache (a rerun is free).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.evaluation.teacher_eval import auc, candidate_pairs  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.base import Pair  # noqa: E402
from lmtx.teacher.cache import AnswerCache, describe_forms, score_cached  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402
from lmtx.teacher.registry import make_teacher  # noqa: E402

FORMS = ("yes", "no", "both")


def agreement(p_yes, cosine, bm25, doc) -> float:
    """The label-free rule tried before `both` (and not kept): corr(teacher, cosine) + corr(teacher, BM25), each view
    centred within its document. The form with the higher value would have been chosen."""
    from lmtx.learn.fuse import _centered, teacher_logit

    zt = _centered(teacher_logit(np.asarray(p_yes)), doc)
    return float(sum(np.corrcoef(zt, _centered(np.asarray(v, float), doc))[0, 1] for v in (cosine, bm25)))


def debtags_pairs(bench: Path, n_docs: int):
    from lmtx.search.encoder import load_encoder
    from lmtx.search.lexical import LexicalIndex

    labels = load_labels(bench / "labels.jsonl")
    docs = [d for d in load_docs(ROOT / "benchmarks" / "runs" / "data" / "train-300.jsonl", labels) if d.labels]
    docs = docs[:n_docs]
    pairs, frame = candidate_pairs(load_encoder("all-MiniLM-L6-v2"), docs, labels, 5, cache_for=None)
    lex = LexicalIndex.build([lab.text("name+description") for lab in labels.labels])
    d, lab = frame["doc"].to_numpy(), frame["label"].to_numpy()
    bm25 = lex.pair_scores([x.text for x in docs], d, lab)
    return pairs, frame["gold"].to_numpy(), d, frame["similarity"].to_numpy(), bm25


def pypi_pairs(bench: Path):
    labels = load_labels(bench / "labels.jsonl.gz")
    byid = {lab.id: lab for lab in labels.labels}
    docs = {json.loads(line)["id"]: json.loads(line) for line in open(bench / "docs.jsonl")}
    rows = [
        json.loads(line) for line in gzip.open(ROOT / "benchmarks" / "answers" / "pypi-describe-pairs.jsonl.gz", "rt")
    ]
    pairs, gold, doc, cos, bm25 = [], [], [], [], []
    order = {d: i for i, d in enumerate(dict.fromkeys(r["doc_id"] for r in rows))}
    for r in rows:
        d, lab = docs[r["doc_id"]], byid[r["label_id"]]
        pairs.append(Pair(d["id"], d["text"], lab.id, lab.name, lab.description))
        gold.append(lab.id in d["labels"])
        doc.append(order[r["doc_id"]])
        cos.append(r["cosine"])
        bm25.append(r["bm25"])
    return pairs, np.array(gold), np.array(doc), np.array(cos), np.array(bm25)


def measure(teacher_name, tpl, pairs, gold, doc, cos, bm25, cache):
    t = make_teacher(teacher_name, tpl, threads=None, progress=None)
    out = {}
    answers = {}
    for form in ("yes", "no"):
        (ps,) = describe_forms(pairs, form, tpl)
        t0 = time.time()
        got, asked = score_cached(t, tpl.hash, ps, cache)
        answers[form] = np.array([a.p_yes for a in got])
        out[form] = {"asked": asked, "s_per_pair": (time.time() - t0) / asked if asked else None}
    answers["both"] = (answers["yes"] + answers["no"]) / 2
    for form in FORMS:
        p = answers[form]
        top = [bool(gold[np.flatnonzero(doc == d)[np.argmax(p[doc == d])]]) for d in np.unique(doc)]
        out.setdefault(form, {}).update(
            {"auc": auc(p, gold), "top_p_yes_is_gold": float(np.mean(top)), "agreement": agreement(p, cos, bm25, doc)}
        )
    return t.model_id, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", default="qwen0.5b")
    ap.add_argument("--pypi-teachers", default="qwen0.5b")
    ap.add_argument("--debtags", default=str(ROOT.parent / "shared" / "benchmarks" / "debtags"))
    ap.add_argument("--pypi", default=str(ROOT.parent / "shared" / "benchmarks" / "pypi-sources"))
    ap.add_argument("--cache", default=str(ROOT / "runs" / "describe-cache.sqlite"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "describe"))
    a = ap.parse_args()
    Path(a.cache).parent.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(a.cache)
    rows = []
    sets = [("debtags", "paper-desc", debtags_pairs(Path(a.debtags), 60), a.teachers.split(","))]
    sets.append(("pypi-sources", "sources", pypi_pairs(Path(a.pypi)), [t for t in a.pypi_teachers.split(",") if t]))
    for name, prompt, (pairs, gold, doc, cos, bm25), teachers in sets:
        for tn in teachers:
            model, res = measure(tn, load_template(prompt), pairs, gold, doc, cos, bm25, cache)
            rows.append(
                {
                    "labels": name,
                    "prompt": prompt,
                    "teacher": model,
                    "pairs": len(pairs),
                    "gold_pairs": int(gold.sum()),
                    "docs": int(len(np.unique(doc))),
                    "forms": res,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    cache.close()
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# The label's description in the teacher's prompt: shown, left out, or both averaged",
        "",
        "`python benchmarks/describe.py` (its docstring: which pairs). AUC of the teacher's P(yes) against gold on the",
        "same pairs; *top is gold*: the share of documents whose highest-P(yes) candidate is a gold label. `yes` shows",
        "the description as the template writes it, `no` leaves it out (the prompt names the label only), `both` asks",
        "each pair both ways and averages P(yes) (`teacher.describe`). Seconds per pair: 2-core CPU, the other",
        "form's answers not cached; a `both` pair costs the two suffixes after one shared document prefix in a run.",
        "",
        "*agreement yes / no*: the label-free rule tried first and dropped (corr with the encoder's cosine + corr with",
        "BM25, on the same pairs; the higher form would have been chosen).",
        "",
        "| labels | prompt | teacher | pairs (gold) | AUC yes | AUC no | AUC both | top is gold yes / no / both "
        "| agreement yes / no | s/pair yes / no |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["forms"]
        sp = " / ".join("-" if f[k]["s_per_pair"] is None else f"{f[k]['s_per_pair']:.2f}" for k in ("yes", "no"))
        lines.append(
            f"| {r['labels']} | {r['prompt']} | {r['teacher']} | {r['pairs']} ({r['gold_pairs']}) | "
            + " | ".join(f"{f[k]['auc']:.3f}" for k in FORMS)
            + " | "
            + " / ".join(f"{f[k]['top_p_yes_is_gold']:.2f}" for k in FORMS)
            + f" | {f['yes']['agreement']:.3f} / {f['no']['agreement']:.3f} | {sp} |"
        )
    lines += [
        "",
        "Five-round debtags runs with each form: [debtags.md](debtags.md), rows q05-hardneg (yes), q05-paper (no: the",
        "`paper` template renders the same prompt) and q05-both. The 1.5B teacher on the debtags pairs:",
        "[prompts_eval_q15.md](prompts_eval_q15.md).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md and {out}.json")


if __name__ == "__main__":
    main()
