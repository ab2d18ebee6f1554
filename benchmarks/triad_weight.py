"""Could the dense weight be estimated from the teacher's judged candidates instead of a prior by encoder state?

For every encoder of a finished run whose candidates the teacher judged (round r+1 judges encoder r's top-j on the
training documents), the one-factor (triad) estimate of how well each of three views tracks relevance: the teacher's
log-odds, the encoder's cosine and the labels' BM25 score, each centered per document (lmtx.learn.fuse's
``estimate_quality``). The implied dense weight is a_d / (a_d + a_l), a = r / (1 - r^2), the optimal weights of
standardized views under that model. It is set against the encoder's P@1 by weight on gold (reported by the round's
metrics.json, never used), on all judged documents and on random subsets of the size of a guard (how noisy it would be
if a run asked it of its held-out documents). No teacher call.

    python benchmarks/triad_weight.py runs/demo benchmarks/runs/pypi/q05-hybrid ...

Writes benchmarks/results/triad_weight.{json,md}; rows of the runs named replace their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.config import RunConfig  # noqa: E402
from lmtx.learn.fuse import _centered, estimate_quality, teacher_logit  # noqa: E402
from lmtx.loop.guard import prior_weight  # noqa: E402
from lmtx.store.rundir import write_text  # noqa: E402

SUBSET_DOCS = 45  # the guard of a 300-document run (15%)
DRAWS = 50


def triad_weight(j: pd.DataFrame) -> float | None:
    d = j["doc_id"].to_numpy()
    q = estimate_quality(
        _centered(teacher_logit(j["p_yes"].to_numpy()), d),
        _centered(j["similarity"].to_numpy(float), d),
        _centered(j["lexical"].to_numpy(float), d),
    )
    if q.method != "triad":
        return None
    a, b = (x / (1 - x * x) for x in (q.r_student, q.r_lexical))
    return a / (a + b)


def at(by_w: dict, w: float | None):
    """P@1 on gold at the recorded weight nearest w."""
    if w is None or not by_w:
        return None
    k = min(by_w, key=lambda x: abs(float(x) - w))
    return by_w[k]


def rows_of(run: Path) -> list[dict]:
    out = []
    for rd in sorted(run.glob("round-*")):
        r = int(rd.name.split("-")[1])
        jp = rd / "judgments.parquet"
        prev = run / f"round-{r - 1:02d}" / "metrics.json"
        if r == 0 or not jp.exists() or not prev.exists():
            continue
        j = pd.read_parquet(jp)
        if "lexical" not in j.columns:  # a run made before hybrid retrieval
            continue
        j = j[j["candidate"]]
        ret = json.loads(prev.read_text()).get("retrieval") or {}
        by_w = ret.get("P@1_by_weight") or {}
        if not by_w:
            continue
        w = triad_weight(j)
        docs = j["doc_id"].unique()
        rng = np.random.default_rng(0)
        subs = [
            triad_weight(j[j["doc_id"].isin(rng.choice(docs, min(SUBSET_DOCS, len(docs)), replace=False))])
            for _ in range(DRAWS)
        ]
        subs = np.array([s for s in subs if s is not None])
        p10, p50, p90 = (float(x) for x in np.percentile(subs, [10, 50, 90]))
        best = ret["best_weight_on_gold"]  # as the round recorded it (lmtx.loop.score)
        prior = prior_weight(RunConfig(), r - 1)
        out.append(
            {
                "run": run.name if run.parent.name == "runs" else f"{run.parent.name}/{run.name}",
                "encoder_round": r - 1,
                "judged_docs": len(docs),
                "pairs": len(j),
                "triad_weight": round(w, 3) if w is not None else None,
                "triad_P@1": at(by_w, w),
                "subset_weight_p10_p50_p90": [round(p10, 2), round(p50, 2), round(p90, 2)],
                "subset_P@1_p10_p50_p90": [at(by_w, p10), at(by_w, p50), at(by_w, p90)],
                "state_prior": prior,
                "state_prior_P@1": at(by_w, prior),
                "best_weight_on_gold": best,
                "best_P@1": by_w[f"{best:g}"],
            }
        )
    return out


def markdown(rows: list[dict]) -> str:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        "# The triad estimate of the dense weight, replayed on judged candidates",
        "",
        "Written by `benchmarks/triad_weight.py` (see its docstring): for each encoder whose top-j candidates the "
        "teacher judged in the next round, the dense weight the one-factor estimate implies, its P@1 on gold (the "
        "nearest recorded weight), the same on random subsets of "
        f"{SUBSET_DOCS} documents ({DRAWS} draws: 10th / 50th / 90th percentile), the state prior lmtx uses (0.6 as "
        "fetched, 0.9 trained) and the best weight on gold. No teacher call.",
        "",
        "| run | encoder | judged docs | triad weight | its P@1 | subsets: weight p10 / p50 / p90 | their P@1 | state "
        "prior | its P@1 | best on gold | its P@1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        sw = " / ".join(f"{v:g}" for v in x["subset_weight_p10_p50_p90"])
        sp = " / ".join(f(v) for v in x["subset_P@1_p10_p50_p90"])
        lines.append(
            f"| {x['run']} | {x['encoder_round']} | {x['judged_docs']} | {f(x['triad_weight'])} | {f(x['triad_P@1'])} "
            f"| {sw} | {sp} | {x['state_prior']:g} | {f(x['state_prior_P@1'])} | {x['best_weight_on_gold']:g} | "
            f"{f(x['best_P@1'])} |"
        )
    lines += [
        "",
        "Triad minus state prior, P@1 on gold summed over each run's encoders (positive: the triad would have "
        "ranked better):",
        "",
    ]
    runs: dict[str, list[float]] = {}
    for x in rows:
        if x["triad_P@1"] is not None and x["state_prior_P@1"] is not None:
            runs.setdefault(x["run"], []).append(x["triad_P@1"] - x["state_prior_P@1"])
    lines += [f"- {k}: {sum(v):+.4f} over {len(v)} encoders" for k, v in runs.items()]
    return "\n".join(lines) + "\n"


def main():
    res = ROOT / "benchmarks" / "results" / "triad_weight"
    old = json.loads(res.with_suffix(".json").read_text()) if res.with_suffix(".json").exists() else []
    new = [x for a in sys.argv[1:] for x in rows_of(Path(a))]
    names = {x["run"] for x in new}
    rows = [x for x in old if x["run"] not in names] + new
    write_text(res.with_suffix(".json"), json.dumps(rows, indent=1))
    write_text(res.with_suffix(".md"), markdown(rows))
    for x in new:
        print(json.dumps(x))


if __name__ == "__main__":
    main()
