"""Weight merging with the initial encoder (train.merge_init), replayed on finished runs that did not merge.

    python benchmarks/merge_init.py [NAME=RUN_DIR ...]

For every round r of a finished run made with train.merge_init 0 (its round-NN/encoder folders are the trained
weights), the encoder  s * initial + (1 - s) * round r  is scored on the run's eval documents for each share s
of the initial encoder (0 = the round itself). The runs' training is unchanged (each round still retrieved and
trained with the unmerged chain), so this measures the merge as a hand-out step only; the loop itself retrieves
with the merged encoder (runs with the default are in debtags.md and docs/default-job.md). Resumable: finished cells are
read back from the JSON. Writes benchmarks/results/merge_init.{json,md}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = {
    "sample, qwen0.5b, 3 rounds (./run.sh's job)": "benchmarks/runs/demo-nomerge",
    "debtags, qwen0.5b, train.epochs 2, 5 rounds": "benchmarks/runs/q05-epochs2-300x5",
    "debtags, qwen1.5b, 5 rounds": "benchmarks/runs/q15-nomerge-300x5",
}
SHARES = (0.0, 1 / 3, 0.5)
OUT = ROOT / "benchmarks" / "results" / "merge_init"


def main():
    import torch

    from lmtx.evaluation.metrics import evaluate_encoder
    from lmtx.learn.train import merge_weights
    from lmtx.search.encoder import load_encoder
    from lmtx.store.data import load_docs, load_labels

    torch.set_num_threads(2)
    runs = dict(a.split("=", 1) for a in sys.argv[1:]) or RUNS
    res = json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").exists() else {}
    for name, rd in runs.items():
        rd = ROOT / rd
        cfg = json.loads((rd / "config.json").read_text())
        assert cfg["train"].get("merge_init", 0.5) == 0.0, f"{rd}: a run made without merging is needed"
        labels = load_labels(cfg["loop"]["labels"])
        ev = load_docs(cfg["loop"]["eval_docs"], labels)
        lt = cfg["encoder"]["label_text"]
        init = load_encoder(cfg["encoder"]["model"], cfg["encoder"]["max_seq_length"], "cpu", lambda s: None)
        w0 = {k: v.detach().clone() for k, v in init.state_dict().items()}
        man = json.loads((rd / "manifest.json").read_text())
        rounds = sorted(int(r) for r in man["rounds"])
        row = res.setdefault(
            name, {"run": str(rd.relative_to(ROOT)), "n_eval": len([d for d in ev if d.labels]), "cells": {}}
        )
        for r in rounds:
            for s in SHARES if r else (0.0,):
                key = f"{r}:{s:.3f}"
                if key in row["cells"]:
                    continue
                t0 = time.time()
                trained = load_encoder(
                    str(rd / f"round-{r:02d}" / "encoder") if r else cfg["encoder"]["model"],
                    cfg["encoder"]["max_seq_length"],
                    "cpu",
                    lambda s: None,
                )
                if s:
                    merge_weights(trained, w0, trained, s)
                m = evaluate_encoder(trained, ev, labels, lt)
                row["cells"][key] = {"round": r, "share_init": s, "P@1": m["P@1"], "P@5": m["P@5"]}
                print(f"{name} round {r} share {s:.2f}: P@1 {m['P@1']:.4f} ({time.time() - t0:.0f}s)", flush=True)
                OUT.with_suffix(".json").write_text(json.dumps(res, indent=1))
        write_md(res)


def write_md(res):
    lines = [
        "# Merging with the initial encoder, replayed on finished runs (benchmarks/merge_init.py)",
        "",
        "P@1 of  s * initial + (1 - s) * round r  for the initial encoder's share s (s = 0: the round as the "
        "run made it). The runs trained without merging; gold only scores.",
        "",
    ]
    for name, row in res.items():
        cells = row["cells"]
        rounds = sorted({c["round"] for c in cells.values()})
        lines += [
            f"## {name} ({row['n_eval']} eval docs; {row['run']})",
            "",
            "| round | " + " | ".join(f"s = {s:.2f}" for s in SHARES) + " |",
            "|---" * (len(SHARES) + 1) + "|",
        ]
        for r in rounds:
            vals = [cells.get(f"{r}:{s:.3f}", cells.get(f"{r}:0.000") if r == 0 else None) for s in SHARES]
            lines.append(f"| {r} | " + " | ".join(f"{v['P@1']:.4f}" if v else "-" for v in vals) + " |")
        lines.append("")
    OUT.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
