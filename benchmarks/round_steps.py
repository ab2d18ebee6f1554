"""Does one round at 783,728 labels learn more from more optimizer steps? A replay on one round's saved teacher
judgments, no teacher call.

    python benchmarks/round_steps.py RUN_FOLDER [--subset 30000] [--out round_steps] [CONFIG ...]

RUN_FOLDER: a finished pypi-sources run (round-01/judgments.parquet and round-01/encoder). Its round-1
pseudo-positives are selected again from the judgments (the run's select.strategy and teacher decisions) and the initial encoder is trained on
them as the loop trains it (train_round, seed loop.seed + 1, a fresh AdamW as round 1 has, then merged with the
initial weights by ``merge_init``), for each CONFIG given: EPOCHS,LR,MERGE_INIT, or key=value pairs joined by
commas (any train.* setting, and merge_init), e.g. ``epochs=1,hard_negatives=1``. Each encoder ranks the run's
eval documents by cosine against a label subset (every gold label of the eval documents and ``--subset`` others
drawn with seed 0: encoding all 783,728 labels takes about half an hour an encoder on the 2-core machine; a label
set no larger than the subset is taken whole). The run's own round-1 encoder is one row, so the replay's epochs=1
row can be checked against it. P@1: the top label is one of the document's gold labels; hit@10: one of them is in
the top 10.

At 783,728 labels a round has one document per training document with a yes (576 on pypi-sources' 678 dev
documents), so at batch 128 an epoch is 5 optimizer steps. Results go to benchmarks/results/OUT.{json,md}, an
encoder at a time (a row already there is not redone). Training seconds are not recorded (the first run of this
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

from lmtx.config import RunConfig, _coerce, field_types  # noqa: E402
from lmtx.learn.select import select_positives  # noqa: E402
from lmtx.learn.train import effective_batch_size, merge_weights, train_round  # noqa: E402
from lmtx.search.encoder import embed, load_encoder  # noqa: E402
from lmtx.search.fast_encode import encode_labels  # noqa: E402
from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.store.rundir import write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def render(res: dict, meta: dict) -> str:
    lines = [
        meta.get("title", "# One round at 783,728 labels: more optimizer steps on the same pseudo-positives"),
        "",
        f"`{meta.get('command', 'python benchmarks/round_steps.py RUN 1,0.0002,0.5 4,0.0002,0.5')}` (no teacher "
        "call). The round-1 "
        f"judgments of `{meta['run']}` ({meta['examples']} pseudo-positives, batch {meta['batch_size']}: "
        f"{meta['steps_per_epoch']} optimizer steps an epoch) trained again from the initial encoder; dense P@1 and "
        f"hit@10 of the {meta['docs']:,} eval documents against "
        + (
            f"all {meta['labels']:,} labels."
            if meta.get("whole")
            else f"{meta['labels']:,} labels (every gold label and others drawn with seed 0), not the full set: "
            "figures are for comparing rows, not with pypi-sources.md."
        ),
        "",
        "| encoder | epochs | lr | merge_init | other settings | steps | P@1 | hit@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in res.items():
        other = ", ".join(f"{k}={v}" for k, v in e.get("other", {}).items()) or "-"
        lines.append(
            f"| {name} | {e.get('epochs', '-')} | {e.get('lr', '-')} | {e.get('merge_init', '-')} | {other} | "
            f"{e.get('steps', '-')} | {e['P@1']:.3f} | {e['hit@10']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--subset", type=int, default=30_000)
    ap.add_argument("--out", default="round_steps", help="results file name under benchmarks/results/")
    ap.add_argument("--title", default=None, help="the results page's heading")
    ap.add_argument("configs", nargs="*", help="EPOCHS,LR,MERGE_INIT or key=value,...")
    args = ap.parse_intermixed_args()
    import pandas as pd

    run = Path(args.run)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    labels = load_labels(cfg.loop.labels)
    ltexts = [lab.text(cfg.encoder.label_text) for lab in labels.labels]
    test = [d for d in load_docs(cfg.loop.eval_docs, labels) if d.labels]
    dev = load_docs(cfg.loop.docs, labels)
    gold = [[labels.index[g] for g in d.labels] for d in test]
    rng = np.random.default_rng(0)
    if args.subset >= len(ltexts):
        sub = np.arange(len(ltexts))
    else:
        sub = np.unique(np.concatenate([np.concatenate(gold), rng.choice(len(ltexts), args.subset, replace=False)]))
    where = {int(lab): i for i, lab in enumerate(sub)}
    gsub = [{where[g] for g in gs} for gs in gold]
    jpath = OUT / f"{args.out}.json"
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
        "whole": len(sub) == len(ltexts),
    }
    if args.title:
        data["meta"]["title"] = args.title
    if args.out != "round_steps":
        data["meta"]["command"] = f"python benchmarks/round_steps.py {run.name} --out {args.out} CONFIG ..."

    def evaluate(model, name: str, extra: dict) -> None:
        le, _ = encode_labels(model, [ltexts[i] for i in sub], "torch", 64, False, "", None)
        de = embed(model, [d.text for d in test], 64)
        top = np.argsort(-(de @ le.T), 1)[:, :10]
        res[name] = {
            **extra,
            "P@1": round(float(np.mean([int(r[0]) in g for r, g in zip(top, gsub)])), 4),
            "hit@10": round(float(np.mean([bool(g & set(r.tolist())) for r, g in zip(top, gsub)])), 4),
        }
        write_text(jpath, json.dumps(data, indent=1) + "\n")
        write_text(OUT / f"{args.out}.md", render(res, data["meta"]))
        print(name, res[name], flush=True)

    init = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length)
    init_w = {k: v.detach().clone() for k, v in init.state_dict().items()}
    if "init" not in res:
        evaluate(init, "init", {})
    if "round-01 as run" not in res:
        evaluate(load_encoder(str(run / "round-01" / "encoder")), "round-01 as run", {})
    types = field_types()
    for spec in args.configs:
        legacy = "=" not in spec  # EPOCHS,LR,MERGE_INIT: the rows written before key=value specs keep their names
        if legacy:
            e, lr, merge = spec.split(",")
            kv = {"epochs": e, "lr": lr, "merge_init": merge}
        else:
            kv = dict(x.split("=", 1) for x in spec.split(","))
        over = {k: _coerce(v, types[f"train.{k}"], f"train.{k}") for k, v in kv.items()}
        merge = over.pop("merge_init", cfg.train.merge_init)
        tc = dataclasses.replace(cfg.train, **over)
        other = {k: v for k, v in over.items() if k not in ("epochs", "lr")}
        name = f"epochs={tc.epochs} lr={tc.lr:g} merge_init={merge:g}" + "".join(f" {k}={v}" for k, v in other.items())
        if legacy:
            name = f"epochs={e} lr={lr} merge_init={spec.split(',')[2]}"
        if name in res:
            continue
        m = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length)
        log = train_round(m, [d.text for d in dev], ltexts, examples, tc, cfg.loop.seed + 1, False, opt_state=None)
        out = load_encoder(cfg.encoder.model, cfg.encoder.max_seq_length)
        merge_weights(out, init_w, m, merge)
        extra = {"epochs": tc.epochs, "lr": tc.lr, "merge_init": merge, "steps": log["steps"]}
        evaluate(out, name, {**extra, "other": other} if other else extra)
    write_text(OUT / f"{args.out}.md", render(res, data["meta"]))


if __name__ == "__main__":
    main()
