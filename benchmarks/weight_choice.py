"""Replay the label-free choice of the ranking weight on finished runs: for every encoder a run's guard judged, the
teacher's cached P(yes) of each dense weight's top-1 label on the guard documents, the weight each rule would pick,
and that weight's P@1 on gold (the round's metrics.json, P@1_by_weight). No teacher call: answers come from the
run's cache (pairs it never asked are skipped).

    python benchmarks/weight_choice.py runs/demo benchmarks/runs/q05-hybrid-300x5

Writes benchmarks/results/weight_choice.{json,md}: rows of the runs named replace their own, rows of other runs are
kept. A second table sets the priors side by side: P@1 on gold at the zero-shot and trained priors against the best
weight, for every encoder whose curve is recorded here or in hybrid.json and pypi-sources.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.config import RunConfig  # noqa: E402
from lmtx.loop.guard import prior_weight  # noqa: E402
from lmtx.loop.job import guard_split  # noqa: E402
from lmtx.search.encoder import embed, label_embeddings, load_encoder  # noqa: E402
from lmtx.search.hybrid import CHOICE_Z, WEIGHTS, build_pools, choose_weight  # noqa: E402
from lmtx.search.index import exact_topk  # noqa: E402
from lmtx.search.lexical import lexical_index  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.base import Pair  # noqa: E402
from lmtx.teacher.cache import AnswerCache  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402

# This replay measures the choice as it was made with retrieval.standardize pool (each side over its own
# top-pool), where the state prior was 0.6 for the encoder as fetched and 0.9 once trained; the recorded P@1 by
# weight it reads is on that scale too. The standardization over every label: benchmarks/standardize.py.
STANDARDIZE = "pool"
POOL_PRIORS = RunConfig.from_dict({"retrieval": {"standardize": STANDARDIZE, "zero_shot_weight": 0.6}})


def state_prior(r: int) -> float:
    """The prior of encoder round r under pool standardization (lmtx.loop.guard.prior_weight)."""
    return prior_weight(POOL_PRIORS, r)


RULES = {
    "prior by state (0.6 as fetched, 0.9 trained), 2.5 SE (the default)": (state_prior, CHOICE_Z),
    "prior by state, 1 SE": (state_prior, 1.0),
    "prior 0.8, 1 SE (the default before)": (0.8, 1.0),
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
        pools = build_pools(demb, lemb, d_idx, d_sim, l_idx, l_sc, lex, texts, STANDARDIZE)
        ws = {*WEIGHTS, 0.8, state_prior(0), state_prior(1)}
        tops = {w: [int(x) for x in pools.rank(w, 1)[0][:, 0]] for w in sorted(ws, reverse=True)}
        keys = sorted({(i, l) for t in tops.values() for i, l in enumerate(t)})
        got = cache.get_many(
            model_id,
            tpl.hash,
            [Pair(guard[i].id, guard[i].text, labels[l].id, labels[l].name, labels[l].description) for i, l in keys],
        )
        ans = {k: g.p_yes for k, g in zip(keys, got) if g is not None}
        base = {*WEIGHTS, 0.8}  # the weights every run's guard rated; a prior the cache lacks is left out
        ok = [i for i in range(len(guard)) if all((i, tops[w][i]) in ans for w in base)]
        ratings = {
            w: np.array([ans[(i, t[i])] for i in ok]) for w, t in tops.items() if all((i, t[i]) in ans for i in ok)
        }
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
                prior = prior(r) if callable(prior) else prior
                if prior not in ratings:  # this run's guard never rated the prior's top-1 labels
                    continue
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


def curves() -> list[dict]:
    """Zero-shot and trained encoders' P@1 by dense weight recorded by the other benchmarks."""
    out = []
    res = ROOT / "benchmarks" / "results"
    h = json.loads((res / "hybrid.json").read_text())
    for r in h["rows"]:
        if r.get("by_weight") and r.get("encoder") == "all-MiniLM-L6-v2":
            bw = {k: v["P@1"] for k, v in r["by_weight"].items()}
            out.append(
                {
                    "source": f"hybrid.json ({r['corpus']})",
                    "corpus": r["corpus"],
                    "state": "as fetched",
                    "P@1_by_weight": bw,
                }
            )
    pj = json.loads((res / "pypi-sources.json").read_text())
    for r in pj["rows"]:
        if r.get("P@1_by_weight"):
            out.append(
                {
                    "source": "pypi-sources.json (783,728 labels)",
                    "corpus": "pypi-783k",
                    "state": "as fetched" if r.get("round", 0) == 0 else f"round {r['round']}",
                    "P@1_by_weight": r["P@1_by_weight"],
                }
            )
    return out


def _at(bw: dict, w: float):
    for k, v in bw.items():
        if abs(float(k) - w) < 1e-9:
            return v
    return None


def prior_table(rows: list[dict]) -> list[str]:
    items = curves() + [
        {
            "source": f"{r['run']} round {r['round']}",
            "corpus": r["run"],
            "state": "as fetched" if r["round"] == 0 else "trained",
            "P@1_by_weight": r["P@1_by_weight"],
        }
        for r in rows
        if r.get("P@1_by_weight")
    ]
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        "## The priors by encoder state, on gold",
        "",
        "P@1 at the state's default prior (0.6 for the encoder as fetched, 0.9 for one lmtx trained), at the former "
        "single prior 0.8, at dense only, and at the best weight on gold (reported, never used). *Regret*: best "
        "minus the prior's P@1.",
        "",
        "| source | state | dense (1) | 0.9 | 0.8 | 0.6 | best weight | its P@1 | regret of the state prior | regret of 0.8 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for it in items:
        bw = it["P@1_by_weight"]
        best = max(bw, key=lambda k: (bw[k], -abs(float(k) - 0.8)))
        pw = state_prior(0 if it["state"] == "as fetched" else 1)
        p, p8 = _at(bw, pw), _at(bw, 0.8)
        lines.append(
            f"| {it['source']} | {it['state']} | {f(_at(bw, 1.0))} | {f(_at(bw, 0.9))} | {f(p8)} | {f(_at(bw, 0.6))} "
            f"| {float(best):g} | {f(bw[best])} | {f(None if p is None else bw[best] - p)} | "
            f"{f(None if p8 is None else bw[best] - p8)} |"
        )
    return lines


NOTE_783K = (
    "At 783,728 labels (pypi-sources, `q05-hybrid` round 0, 102 guard documents, Qwen2.5-Coder-0.5B) the teacher's "
    "mean P(yes) on each weight's top-1 moved by at most 0.013 across the weights while P@1 on gold moved from "
    "0.309 (dense) to 0.449 (w 0.4): this teacher's ratings of a top-1 label do not separate rankings that differ "
    "by 14 points, so the rule keeps its prior. (That run's folder is gone; its row above is kept from the run.)"
)


def main():
    res = ROOT / "benchmarks" / "results" / "weight_choice"
    old = json.loads(res.with_suffix(".json").read_text()) if res.with_suffix(".json").exists() else []
    if sys.argv[1:] == ["--md"]:  # the tables again from the saved rows
        rows = old
    else:
        new = [x for a in sys.argv[1:] for x in replay(Path(a))]
        names = {x["run"] for x in new}
        rows = [x for x in old if x["run"] not in names] + new
        res.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    rules = list(RULES)
    lines = [
        "# The label-free choice of the ranking weight, replayed",
        "",
        "Written by `benchmarks/weight_choice.py`: for each encoder of a finished run, the teacher's cached P(yes) "
        "of each dense weight's top-1 label on the guard's held-out documents, the weight each rule picks, and "
        "that weight's P@1 on gold (the round's eval documents). No teacher call. '-': a rule the run's cache "
        "cannot replay (rows kept from runs whose folders are gone).",
        "",
        "| run | round | dense P@1 | best on gold | "
        + " | ".join(rules)
        + " | teacher's mean P(yes), w 1 / 0.8 / 0.5 / 0 |",
        "|---|---|---|---|" + "---|" * len(rules) + "---|",
    ]
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        ch = r["choices"]
        if "prior 0.8, 1 SE (the default)" in ch:  # rows written before the state prior
            ch = {**ch, "prior 0.8, 1 SE (the default before)": ch["prior 0.8, 1 SE (the default)"]}
        cells = [f"{ch[k]['weight']:g}: {f(ch[k]['P@1'])}" if k in ch else "-" for k in rules]
        lines.append(
            f"| {r['run']} | {r['round']} | {f(r['dense'])} | {f(r['best_on_gold'])} | "
            + " | ".join(cells)
            + " | "
            + " / ".join(f(r.get("label_free_means", {}).get(w)) for w in ("1", "0.8", "0.5", "0"))
            + " |"
        )
    lines += ["", NOTE_783K, ""] + prior_table(rows)
    res.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {res}.md")


if __name__ == "__main__":
    main()
