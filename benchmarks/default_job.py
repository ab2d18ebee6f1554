"""The default job's figures from its run folder: per round the encoder's P@1, BM25's, the handed-out ranking's and
the best weight on gold, plus wall time per step.

    ./run.sh                                  # writes runs/demo
    python benchmarks/default_job.py runs/demo

Writes benchmarks/results/default_job.{json,md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def section(run: Path) -> tuple[list[dict], list[str]]:
    man = json.loads((run / "manifest.json").read_text())
    rows = []
    for r in sorted(int(k) for k in man["rounds"]):
        m = json.loads((run / f"round-{r:02d}" / "metrics.json").read_text())
        ret = m.get("retrieval") or {}
        by_w = ret.get("P@1_by_weight") or {}
        rows.append(
            {
                "round": r,
                "dense_P@1": m.get("P@1"),
                "lexical_P@1": (ret.get("lexical") or {}).get("P@1"),
                "final": ret.get("final"),
                "best_weight_on_gold": ret.get("best_weight_on_gold"),
                "best_weight_P@1": max(by_w.values()) if by_w else None,
                "pairs_asked": m.get("pairs_asked"),
                "guard_pairs_asked": m.get("guard_pairs_asked"),
                "seconds": m.get("seconds"),
            }
        )
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    note = man.get("note") or ""
    lines = [
        f"## {run.name}" + (f": {note}" if note else ""),
        "",
        "| round | dense P@1 | BM25 P@1 | handed out | its P@1 | best weight on gold | its P@1 | teacher pairs "
        "asked (+ guard) | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        fin = x["final"] or {}
        how = f"hybrid {fin['dense_weight']:g}" if fin.get("mode") == "hybrid" else fin.get("mode", "-")
        secs = sum((x["seconds"] or {}).values()) if x["seconds"] else None
        lines.append(
            f"| {x['round']} | {f(x['dense_P@1'])} | {f(x['lexical_P@1'])} | {how} | {f(fin.get('P@1'))} | "
            f"{x['best_weight_on_gold'] if x['best_weight_on_gold'] is not None else '-'} | "
            f"{f(x['best_weight_P@1'])} | {x['pairs_asked'] if x['pairs_asked'] is not None else '-'}"
            f" (+{x['guard_pairs_asked'] or 0}) | {'-' if secs is None else f'{secs:.0f}'} |"
        )
    return rows, lines


def main():
    runs = [Path(a) for a in sys.argv[1:]] or [ROOT / "runs" / "demo"]
    out = ROOT / "benchmarks" / "results" / "default_job"
    lines = [
        "# The default job (`./run.sh`: the bundled sample, 3 rounds, 150 docs, j = 5, Qwen2.5-Coder-0.5B)",
        "",
        "Written by `python benchmarks/default_job.py RUN...` from run folders. *dense*: the round's encoder "
        "alone; *handed out*: the ranking the run hands out (retrieval.mode auto); *best on gold*: reported, "
        "never used. Seconds: the round's steps on the host that ran it.",
        "",
    ]
    data = {}
    for run in runs:
        rows, sec = section(run)
        data[run.name] = rows
        lines += sec + [""]
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
