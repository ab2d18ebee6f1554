"""Does repeated training on the same pseudo-positives drift? Optimizer variants, fixed data, no teacher.

Takes the judged pairs of a finished run (its last round's judgments.parquet: the union of every round's pairs,
fused scores included), builds the round's training examples once, and trains N successive "rounds" on them
from the initial encoder with each optimizer variant, evaluating P@1 on the run's eval docs after each. A variant
that is stable improves and then plateaus; one that drifts swings or falls. The teacher is not asked (its answers
are in the parquet), so this isolates the training step from the teaching.

    python benchmarks/round_stability.py --run runs/demo --rounds 5 --variants fresh,persist,avg0.5,lr5e-5x4
Writes benchmarks/results/round_stability.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmtx.config import RunConfig  # noqa: E402
from lmtx.evaluation.metrics import evaluate_encoder  # noqa: E402
from lmtx.learn.select import decide, select_positives  # noqa: E402
from lmtx.learn.train import train_round  # noqa: E402
from lmtx.loop.job import guard_split  # noqa: E402
from lmtx.search.encoder import load_encoder  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402


def variant_cfg(base, name: str):
    """(train config, keep AdamW state across rounds, weight-averaging alpha)."""
    c = copy.deepcopy(base)
    c.min_steps = 1
    if name == "fresh":
        return c, False, 1.0
    if name == "persist":
        return c, True, 1.0
    if name.startswith("avg"):
        return c, False, float(name[3:])
    if name.startswith("lr"):
        lr, _, ep = name[2:].partition("x")
        c.lr, c.epochs = float(lr), int(ep or 1)
        return c, False, 1.0
    if name.startswith("plr"):  # persistent state at another lr
        c.lr = float(name[3:])
        return c, True, 1.0
    raise SystemExit(f"unknown variant {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--round", type=int, default=None, help="which round's judgments (default: the last)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default="fresh,persist,avg0.5,lr5e-5x4")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/round_stability"))
    a = ap.parse_args()
    run = Path(a.run)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    labels = load_labels(cfg.loop.labels)
    docs, _ = guard_split(load_docs(cfg.loop.docs, labels, cfg.loop.max_docs), cfg)
    eval_docs = load_docs(cfg.loop.eval_docs, labels)
    rounds = sorted(int(p.name[6:]) for p in run.glob("round-*") if (p / "judgments.parquet").exists())
    r = a.round or rounds[-1]
    j = pd.read_parquet(run / f"round-{r:02d}" / "judgments.parquet")
    pos = {d.id: i for i, d in enumerate(docs)}
    j = j[j["doc_id"].isin(pos)].copy()
    j["doc"] = [pos[d] for d in j["doc_id"]]
    j["label"] = [labels.index[l] for l in j["label_id"]]
    j["yes"] = decide(j, cfg.teacher.decision)
    examples = select_positives(j, cfg.select.strategy)
    doc_texts = [d.text for d in docs]
    label_texts = [l.text(cfg.encoder.label_text) for l in labels.labels]
    out_path = Path(a.out + ".json")
    res = json.loads(out_path.read_text()) if out_path.exists() else {"rows": []}
    res.update({"run": str(run), "judgments_round": r, "examples": len(examples), "eval_docs": len(eval_docs)})
    for v in a.variants.split(","):
        tcfg, persist, alpha = variant_cfg(cfg.train, v)
        model = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length, "cpu", print)
        p0 = evaluate_encoder(model, eval_docs, labels, cfg.encoder.label_text)["P@1"]
        traj, state, t0 = [p0], ({} if persist else None), time.time()
        for k in range(1, a.rounds + 1):
            start = {n: p.detach().clone() for n, p in model.named_parameters()} if alpha < 1 else None
            train_round(model, doc_texts, label_texts, examples, tcfg, cfg.loop.seed + k, False, opt_state=state)
            if start is not None:
                import torch

                with torch.no_grad():
                    for n, p in model.named_parameters():
                        p.mul_(alpha).add_(start[n], alpha=1 - alpha)
            traj.append(evaluate_encoder(model, eval_docs, labels, cfg.encoder.label_text)["P@1"])
            print(f"{v}: round {k}: P@1 {traj[-1]:.3f}", flush=True)
        res["rows"] = [x for x in res["rows"] if x["variant"] != v] + [
            {"variant": v, "P@1": traj, "seconds": round(time.time() - t0, 1)}
        ]
        out_path.write_text(json.dumps(res, indent=1))
        lines = [
            f"# Round stability: {len(examples)} fixed training examples (judgments of {run} round {r}), "
            f"{len(eval_docs)} eval docs, no teacher calls",
            "",
            "| variant | " + " | ".join(f"round {i}" for i in range(a.rounds + 1)) + " | max drop | seconds |",
            "|---|" + "---|" * (a.rounds + 3),
        ]
        for x in res["rows"]:
            t = x["P@1"]
            drop = max([t[i - 1] - t[i] for i in range(1, len(t))] + [0])
            lines.append(
                f"| {x['variant']} | " + " | ".join(f"{p:.3f}" for p in t) + f" | {drop:.3f} | {x['seconds']} |"
            )
        Path(a.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
