"""Replay the label-free choice of the ranking weight on finished runs: for every encoder a run's guard judged, the
teacher's cached P(yes) of each dense weight's top-1 label on the guard documents, the weight each rule would pick,
and that weight's P@1 on gold (the round's metrics.json, P@1_by_weight). No teacher call: answers come from the
run's cache (pairs it never asked are skipped).

    python benchmarks/weight_choice.py runs/demo benchmarks/runs/q05-hybrid-300x5

Writes benchmarks/results/weight_choice.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.config import RunConfig  # noqa: E402
from lmtx.loop.job import guard_split  # noqa: E402
from lmtx.search.encoder import embed, label_embeddings, load_encoder  # noqa: E402
from lmtx.search.hybrid import WEIGHTS, build_pools, choose_weight  # noqa: E402
from lmtx.search.index import exact_topk  # noqa: E402
from lmtx.search.lexical import lexical_index  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.base import Pair  # noqa: E402
from lmtx.teacher.cache import AnswerCache  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402

RULES = {
    "prior 0.8, 1 SE (the default)": (0.8, 1.0),
    "prior 0.8, 2 SE": (0.8, 2.0),
    "prior 1 (dense), 1 SE": (1.0, 1.0),
    "prior 1 (dense), 2 SE": (1.0, 2.0),
    "argmax": (None, 0.0),
}


def replay(run: Path) -> list[dict]:
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    man = json.loads((run / "manifest.json").read_text())
    labels = load_labels(cfg.loop.labels)
    docs = load_docs(cfg.loop.docs, labels, cfg.loop.max_docs)
    _, guard = guard_split(docs, cfg)
    tpl = load_template(cfg.teacher.prompt, cfg.teacher.prompt_file, cfg.teacher.max_doc_words)
    cache = AnswerCache(run / "teacher-cache.sqlite")
    if "teacher" in man:
        model_id = man["teacher"].split(" (")[0].removeprefix("hf:")
    else:  # only round 0 finished: the one teacher in the cache
        (model_id,) = {m for (m,) in cache.db.execute("SELECT DISTINCT model FROM answers")}
    lex = lexical_index(labels, cfg.encoder.label_text)
    texts = [d.text for d in guard]
    l_idx, l_sc = lex.topk(texts, cfg.retrieval.pool)
    out = []
    for r in sorted(int(k) for k in man["rounds"]):
        spec = cfg.encoder.model if r == 0 else str(run / f"round-{r:02d}" / "encoder")
        model = load_encoder(spec, cfg.encoder.max_seq_length)
        lemb = label_embeddings(model, labels, cfg.encoder.label_text, cache_for=spec, progress=False)
        demb = embed(model, texts)
        d_idx, d_sim = exact_topk(demb, lemb, cfg.retrieval.pool)
        pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lex, texts)
        tops = {w: [int(x) for x in pools.rank(w, 1)[0][:, 0]] for w in sorted({*WEIGHTS, 0.8}, reverse=True)}
        keys = sorted({(i, l) for t in tops.values() for i, l in enumerate(t)})
        got = cache.get_many(
            model_id,
            tpl.hash,
            [Pair(guard[i].id, guard[i].text, labels[l].id, labels[l].name, labels[l].description) for i, l in keys],
        )
        ans = {k: g.p_yes for k, g in zip(keys, got) if g is not None}
        ok = [i for i in range(len(guard)) if all((i, t[i]) in ans for t in tops.values())]
        ratings = {w: np.array([ans[(i, t[i])] for i in ok]) for w, t in tops.items()}
        m = json.loads((run / f"round-{r:02d}" / "metrics.json").read_text())
        by_w = (m.get("retrieval") or {}).get("P@1_by_weight") or {}
        row = {
            "run": run.name,
            "round": r,
            "guard_docs": len(ok),
            "P@1_by_weight": by_w,
            "best_on_gold": max(by_w.values()) if by_w else None,
            "dense": by_w.get("1"),
            "choices": {},
            "label_free_means": {f"{w:g}": round(float(v.mean()), 4) for w, v in ratings.items() if len(v)},
        }
        for name, (prior, z) in RULES.items():
            if prior is None:
                means = {w: float(v.mean()) for w, v in ratings.items()}
                w = max(means, key=lambda x: (round(means[x], 6), x))
            else:
                w, _ = choose_weight(ratings, prior, z)
            row["choices"][name] = {"weight": w, "P@1": by_w.get(f"{w:g}")}
        out.append(row)
        print(
            json.dumps({k: row[k] for k in ("run", "round", "dense", "best_on_gold")}),
            {k: (v["weight"], v["P@1"]) for k, v in row["choices"].items()},
            flush=True,
        )
    cache.close()
    return out


def main():
    res = ROOT / "benchmarks" / "results" / "weight_choice"
    if sys.argv[1:] == ["--md"]:  # the table again from the saved rows
        rows = json.loads(res.with_suffix(".json").read_text())
    else:
        rows = [x for a in sys.argv[1:] for x in replay(Path(a))]
        res.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# The label-free choice of the ranking weight, replayed",
        "",
        "Written by `benchmarks/weight_choice.py`: for each encoder of a finished run, the teacher's cached P(yes) "
        "of each dense weight's top-1 label on the guard's held-out documents, the weight each rule picks, and "
        "that weight's P@1 on gold (the round's eval documents). No teacher call.",
        "",
        "| run | round | dense P@1 | best on gold | "
        + " | ".join(RULES)
        + " | teacher's mean P(yes), w 1 / 0.8 / 0.5 / 0 |",
        "|---|---|---|---|" + "---|" * len(RULES) + "---|",
    ]
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        cells = [f"{c['weight']:g}: {f(c['P@1'])}" for c in r["choices"].values()]
        lines.append(
            f"| {r['run']} | {r['round']} | {f(r['dense'])} | {f(r['best_on_gold'])} | "
            + " | ".join(cells)
            + " | "
            + " / ".join(f(r.get("label_free_means", {}).get(w)) for w in ("1", "0.8", "0.5", "0"))
            + " |"
        )
    res.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {res}.md")


if __name__ == "__main__":
    main()
