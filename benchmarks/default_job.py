"""The default job's figures from its run folder: per round the encoder's P@1, BM25's, the handed-out ranking's and
the best weight on gold, plus wall time per step.

    ./run.sh                                  # writes runs/demo
    python benchmarks/default_job.py runs/demo
    python benchmarks/default_job.py --time-against REV   # wall time: the job at git revision REV, then at the
                                                          # working tree, one after the other, each from empty caches

Writes benchmarks/results/default_job.{json,md}; sections of runs not named again are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
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
                # prompts (two a new pair under teacher.describe both); rounds written before the two were counted
                # apart called their prompts pairs_asked
                "pairs_asked": m.get("prompts_asked", m.get("pairs_asked")),
                "guard_pairs_asked": m.get("guard_prompts_asked", m.get("guard_pairs_asked")),
                "seconds": m.get("seconds"),
            }
        )
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    note = man.get("note") or ""
    lines = [
        f"## {run.name}" + (f": {note}" if note else ""),
        "",
        "| round | dense P@1 | BM25 P@1 | handed out | its P@1 | best weight on gold | its P@1 | teacher "
        "prompts asked (+ guard) | seconds |",
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


JOB = ["iterate", "--rounds", "3", "--max-docs", "150", "--candidates", "5", "--no-progress"]  # run.sh's job


def time_against(rev: str, work: Path) -> dict:
    """The default job at git revision ``rev`` (a worktree) and at this working tree, one after the other, each
    with an empty LMTX_HOME (the offline weights linked in) and a new run folder: wall seconds of each, same host,
    same session. Run it on a quiet machine: nothing else may share the cores."""
    home = Path(os.environ.get("LMTX_HOME", ROOT / ".lmtx")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    old = work / f"tree-{rev}"
    if not old.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(old), rev], check=True)
    out = {}
    for name, tree in ((f"at {rev}", old), ("working tree", ROOT)):
        h, run = work / f"home-{len(out)}", work / f"run-{len(out)}"
        shutil.rmtree(h, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        h.mkdir()
        (h / "assets").symlink_to(home / "assets")
        env = {**os.environ, "LMTX_HOME": str(h), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        t0 = time.time()
        cmd = [sys.executable, "-c", "from lmtx.cli import app; app()", *JOB, "--out", str(run)]
        with open(work / f"log-{len(out)}.txt", "w") as log:
            rc = subprocess.run(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        secs = time.time() - t0
        rows = section(run)[0] if (run / "manifest.json").exists() else []
        p1 = {
            x["round"]: {"dense": x["dense_P@1"], "handed_out": (x["final"] or {}).get("P@1", x["dense_P@1"])}
            for x in rows
        }
        out[name] = {"exit": rc, "seconds": round(secs, 1), "P@1": p1, "run": str(run.relative_to(work))}
        print(f"[default_job] {name}: exit {rc}, {secs:.0f} s", flush=True)
    return out


def render(data: dict) -> list[str]:
    lines = [
        "# The default job (`./run.sh`: the bundled sample, 3 rounds, 150 docs, j = 5, Qwen2.5-Coder-0.5B)",
        "",
        "Written by `python benchmarks/default_job.py RUN...` from run folders. *dense*: the round's encoder "
        "alone; *handed out*: the ranking the run hands out (retrieval.mode auto); *best on gold*: reported, "
        "never used. Seconds: the round's steps on the host that ran it.",
        "",
    ]
    for run in data.get("runs", {}).values():
        lines += run["lines"] + [""]
    for t in data.get("wall_time", []):
        (a, x), (b, y) = list(t["jobs"].items())
        lines += [
            f"## Wall time: the job {a} against {b} ({t['date']}, one 2-core host"
            + ("" if t.get("note") else ", one after the other on a quiet machine")
            + ")",
            "",
            "`python benchmarks/default_job.py --time-against REV`: each job from an empty LMTX_HOME (offline weights "
            "linked in, no answer or label cache) and a new run folder."
            + (f" Note: {t['note']}." if t.get("note") else ""),
            "",
            "| job | exit | wall seconds | P@1 by round (dense / handed out) |",
            "|---|---|---|---|",
        ]
        for k, v in t["jobs"].items():
            p1 = ", ".join(
                f"{r}: {q['dense']:.3f}" + (f" / {q['handed_out']:.3f}" if q["handed_out"] != q["dense"] else "")
                for r, q in v["P@1"].items()
            )
            lines.append(f"| {k} | {v['exit']} | {v['seconds']:.0f} | {p1} |")
        lines += ["", f"Ratio ({b} / {a}): **{y['seconds'] / x['seconds']:.2f}**.", ""]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--time-against", metavar="REV", help="time the job at git revision REV against the working tree")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "default-job-time")
    a = ap.parse_args()
    out = ROOT / "benchmarks" / "results" / "default_job"
    jp = out.with_suffix(".json")
    data = json.loads(jp.read_text()) if jp.exists() else {}
    if "runs" not in data:  # the first format: run name -> rows (its lines are rebuilt from the old markdown)
        old = out.with_suffix(".md").read_text().split("\n## ") if out.with_suffix(".md").exists() else []
        data = {"runs": {}, "wall_time": []}
        for part in old[1:]:
            name = part.split("\n", 1)[0].split(":", 1)[0].strip()
            data["runs"][name] = {"lines": ("## " + part).rstrip("\n").split("\n")}
    runs = a.runs or ([] if a.time_against else [ROOT / "runs" / "demo"])
    for run in runs:
        rows, sec = section(run)
        data["runs"][run.name] = {"rows": rows, "lines": sec}
    if a.time_against:
        jobs = time_against(a.time_against, a.work)
        data["wall_time"].append({"date": time.strftime("%Y-%m-%d"), "rev": a.time_against, "jobs": jobs})
    lines = render(data)
    jp.write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
