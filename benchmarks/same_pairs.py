"""Two teachers' answers on the same pairs, from the answers kept in benchmarks/answers/ (no teacher is run).

    python benchmarks/same_pairs.py    # pypi-sources: q05-fresh (0.5B, describe yes) and q15-today (1.5B, both)

Both runs drew round 1's candidates from the same initial encoder and BM25, so their caches share those pairs. On
the pairs both teachers answered with the label's description shown: the AUC of P(yes) against gold and how often
a document's top-P(yes) pair is gold, for the 0.5B teacher (yes) and the 1.5B teacher (yes, no, both: the two
answers averaged, what q15-today trained on). Writes benchmarks/results/same_pairs.{json,md}.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from lmtx.evaluation.metrics import auc  # noqa: E402
from lmtx.store.data import iter_records, labels_of, load_docs  # noqa: E402
from lmtx.store.files import replacing  # noqa: E402
from lmtx.teacher.base import Pair  # noqa: E402
from lmtx.teacher.cache import describe_forms  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402

LABELS = ROOT.parent / "shared" / "benchmarks" / "pypi-sources" / "labels.jsonl.gz"
DOCS = ROOT / "benchmarks" / "runs" / "pypi" / "dev.jsonl"  # made by benchmarks/pypi_sources.py
ANSWERS = {
    "qwen2.5-coder-0.5b (q05-fresh)": ROOT / "benchmarks" / "answers" / "pypi-q05-fresh.jsonl.gz",
    "qwen2.5-coder-1.5b (q15-today)": ROOT / "benchmarks" / "answers" / "pypi-q15-today.jsonl.gz",
}
OUT = ROOT / "benchmarks" / "results" / "same_pairs"


def read(path: Path) -> dict[tuple[str, str], float]:
    return {(a["doc"], a["label"]): a["p_yes"] for a in map(json.loads, gzip.open(path, "rt"))}


def main():
    answers = {k: read(p) for k, p in ANSWERS.items()}
    docs = {}
    for d in load_docs(DOCS):
        docs[Pair(d.id, d.text, "", "").doc_hash] = d
    shared = set.intersection(*(set(a) for a in answers.values()))
    shared = {k for k in shared if k[0] in docs}
    want = {lh for _, lh in shared}
    template = load_template("sources")  # the prompt both runs asked with (--prompt sources)
    full, bare = {}, {}  # label hash (description shown) -> label id, and that label's bare form's hash
    for lab in labels_of(iter_records(LABELS), str(LABELS)):
        p = Pair("", "", lab.id, lab.name, lab.description)
        if p.label_hash in want:
            full[p.label_hash] = lab.id
            bare[p.label_hash] = describe_forms([p], "no", template)[0][0].label_hash
    q05, q15 = answers.values()
    rows = sorted(shared)
    gold = np.array([full[lh] in set(docs[dh].labels) for dh, lh in rows])
    cols = {
        "0.5B, description shown (as q05-fresh asked)": [q05[k] for k in rows],
        "1.5B, description shown": [q15[k] for k in rows],
        "1.5B, name alone": [q15.get((dh, bare[lh]), np.nan) for dh, lh in rows],
    }
    cols["1.5B, both averaged (as q15-today asked)"] = list(
        (np.array(cols["1.5B, description shown"]) + np.array(cols["1.5B, name alone"])) / 2
    )
    doc_of = np.array([dh for dh, _ in rows])
    res = {"pairs": len(rows), "gold": int(gold.sum()), "docs": len(set(doc_of)), "answers": {}}
    for name, v in cols.items():
        v = np.asarray(v, dtype=float)
        ok = ~np.isnan(v)
        tops = [i[np.argmax(v[i])] for i in (np.flatnonzero((doc_of == d) & ok) for d in sorted(set(doc_of))) if len(i)]
        res["answers"][name] = {
            "pairs": int(ok.sum()),
            "AUC": round(float(auc(v[ok], gold[ok])), 4),
            "top_is_gold": round(float(gold[tops].mean()), 4),
        }
        print(name, res["answers"][name], flush=True)
    with replacing(OUT.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        "# Two teachers on the same pairs (pypi-sources)",
        "",
        f"`python benchmarks/same_pairs.py`: the {res['pairs']:,} (document, label) pairs of {res['docs']} `dev` "
        f"documents ({res['gold']} gold) that both q05-fresh's 0.5B teacher and q15-today's 1.5B teacher answered "
        "with the label's description shown (their round-1 candidates are the same, later rounds overlap; answers from "
        "`benchmarks/answers/`). *top is gold*: per document, the pair with the highest P(yes) is gold.",
        "",
        "| answers | pairs | AUC on gold | top is gold |",
        "|---|---|---|---|",
    ]
    for name, a in res["answers"].items():
        lines.append(f"| {name} | {a['pairs']:,} | {a['AUC']:.3f} | {a['top_is_gold']:.3f} |")
    with replacing(OUT.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
