"""Does one round at 783,728 labels learn more from more optimizer steps? A replay on one round's saved teacher
judgments, no teacher call.

    python benchmarks/round_steps.py RUN_FOLDER [--subset 30000] [EPOCHS,LR,MERGE_INIT ...]

RUN_FOLDER: a finished pypi-sources run (round-01/judgments.parquet and round-01/encoder). Its round-1
pseudo-positives are selected again from the judgments (the run's select.strategy and teacher decisions) and the initial encoder is trained on
them as the loop trains it (train_round, seed loop.seed + 1, a fresh AdamW as round 1 has, then merged with the
initial weights by ``merge_init``), for each EPOCHS,LR,MERGE_INIT given. Each encoder ranks the run's eval
documents by cosine against a label subset (every gold label of the eval documents and ``--subset`` others drawn
with seed 0: encoding all 783,728 labels takes about half an hour an encoder on the 2-core machine). The run's own
round-1 encoder is one row, so the replay's epochs=1 row can be checked against it.

At 783,728 labels a round has one document per training document with a yes (576 on pypi-sources' 678 dev
documents), so at batch 128 an epoch is 5 optimizer steps. Results go to benchmarks/results/round_steps.{json,md},
an encoder at a time (a row already there is not redone). Training seconds are not recorded (the first run of this
harness shared the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.config import RunConfig  # noqa: E402
from lmtx.learn.select import select_positives  # noqa: E402
from lmtx.learn.train import effective_batch_size, merge_weights, train_round  # noqa: E402
from lmtx.search.encoder import embed, load_encoder  # noqa: E402
from lmtx.search.fast_encode import encode_labels  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.store.rundir import write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def render(res: dict, meta: dict) -> str:
    lines = [
        "# One round at 783,728 labels: more optimizer steps on the same pseudo-positives",
        "",
        "`python benchmarks/round_steps.py RUN 1,0.0002,0.5 4,0.0002,0.5` (no teacher call). The round-1 "
        f"judgments of `{meta['run']}` ({meta['examples']} pseudo-positives, batch {meta['batch_size']}: "
        f"{meta['steps_per_epoch']} optimizer steps an epoch) trained again from the initial encoder; dense P@1 and "
        f"hit@10 of the {meta['docs']:,} eval documents against {meta['labels']:,} labels (every gold label and "
        "others drawn with seed 0), not the full set: figures are for comparing rows, not with pypi-sources.md.",
        "",
        "| encoder | epochs | lr | merge_init | steps | P@1 | hit@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in res.items():
        lines.append(
            f"| {name} | {e.get('epochs', '-')} | {e.get('lr', '-')} | {e.get('merge_init', '-')} | "
            f"{e.get('steps', '-')} | {e['P@1']:.3f} | {e['hit@10']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--subset", type=int, default=30_000)
    ap.add_argument("configs", nargs="*", help="EPOCHS,LR,MERGE_INIT")
    args = ap.parse_args()
    import pandas as pd

    run = Path(args.run)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    labels = load_labels(cfg.loop.labels)
    ltexts = [lab.text(cfg.encoder.label_text) for lab in labels.labels]
    test = [d for d in load_docs(cfg.loop.eval_docs, labels) if d.labels]
    dev = load_docs(cfg.loop.docs, labels)
    gold = np.array([labels.index[d.labels[0]] for d in test])
    rng = np.random.default_rng(0)
    sub = np.unique(np.concatenate([gold, rng.choice(len(ltexts), args.subset, replace=False)]))
    where = {int(lab): i for i, lab in enumerate(sub)}
    gsub = np.array([where[g] for g in gold])
    jpath = OUT / "round_steps.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {"meta": {}, "rows": {}}
    res = data["rows"]

    j = pd.read_parquet(run / "round-01" / "judgments.parquet")
    did = {d.id: i for i, d in enumerate(dev)}
    j = j.assign(doc=[did[x] for x in j.doc_id], label=[labels.index[x] for x in j.label_id])
    examples = select_positives(j, cfg.select.strategy)
    bs = effective_batch_size(len(examples), cfg.train)  # what train_round steps with
    data["meta"] = {
        "run": run.name,
        "examples": len(examples),
        "batch_size": bs,
        "steps_per_epoch": -(-len(examples) // bs),
        "docs": len(test),
        "labels": len(sub),
    }

    def evaluate(model, name: str, extra: dict) -> None:
        le, _ = encode_labels(model, [ltexts[i] for i in sub], "torch", 64, False, "", None)
        de = embed(model, [d.text for d in test], 64)
        top = np.argsort(-(de @ le.T), 1)[:, :10]
        res[name] = {
            **extra,
            "P@1": round(float((top[:, 0] == gsub).mean()), 4),
            "hit@10": round(float(np.mean([g in r for r, g in zip(top, gsub)])), 4),
        }
        write_text(jpath, json.dumps(data, indent=1) + "\n")
        write_text(OUT / "round_steps.md", render(res, data["meta"]))
        print(name, res[name], flush=True)

    init = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length)
    init_w = {k: v.detach().clone() for k, v in init.state_dict().items()}
    if "init" not in res:
        evaluate(init, "init", {})
    if "round-01 as run" not in res:
        evaluate(load_encoder(str(run / "round-01" / "encoder")), "round-01 as run", {})
    for spec in args.configs:
        e, lr, merge = spec.split(",")
        name = f"epochs={e} lr={lr} merge_init={merge}"
        if name in res:
            continue
        m = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length)
        tc = dataclasses.replace(cfg.train, epochs=int(e), lr=float(lr))
        log = train_round(m, [d.text for d in dev], ltexts, examples, tc, cfg.loop.seed + 1, False, opt_state=None)
        out = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length)
        merge_weights(out, init_w, m, float(merge))
        evaluate(out, name, {"epochs": int(e), "lr": float(lr), "merge_init": float(merge), "steps": log["steps"]})
    write_text(OUT / "round_steps.md", render(res, data["meta"]))


if __name__ == "__main__":
    main()
