"""`lmtx report RUN`: a markdown report with PNG plots (metrics per round; teacher P(yes), gold vs not)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .rundir import RunDir

KEYS = ["P@1", "P@3", "P@5", "R@5", "R@10", "nDCG@5", "PSP@5"]
TEACH = ["pseudo_positive_precision", "pseudo_positive_precision_teacher_only", "teacher_yes_rate",
         "teacher_yes_precision", "teacher_yes_recall", "teacher_auc", "student_auc", "fused_auc", "pairs_asked",
         "strong_pairs_asked", "guard_pairs_asked", "docs_with_yes"]


def make_report(run: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rd = RunDir(run)
    rounds = rd.finished_rounds()
    if not rounds:
        raise ValueError(f"{run}: no finished round to report")
    ms = [json.loads((rd.round_dir(r) / "metrics.json").read_text()) for r in rounds]
    cfg = json.loads((rd.out / "config.json").read_text())
    man = rd.manifest()
    lines = [f"# lmtx run report: {rd.out}", "",
             f"- teacher: {man.get('teacher', cfg['teacher']['name'])}"
             + ("  **(SIMULATED: answers from gold labels, not a real teacher)**" if man.get("simulated") else ""),
             f"- prompt: {cfg['teacher']['prompt_file'] or cfg['teacher']['prompt']}, decision {cfg['teacher']['decision']}, "
             f"selection {cfg['select']['strategy']}, loss {cfg['train']['loss']} (margin {cfg['train']['margin']}), "
             f"start {cfg['train']['start']}",
             f"- encoder: {cfg['encoder']['model']}; candidates j = {cfg['index']['candidates']}; docs: {cfg['loop']['docs']}",
             "", "## Student metrics per round (round 0 = the initial encoder)", ""]
    keys = [k for k in KEYS if any(k in m for m in ms)]
    lines += [f"- best round (what `evaluate`/`tag --model {rd.out}` use): {man.get('best_round', '-')}", ""]
    if keys:
        lines += ["| round | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for m in ms:
            lines.append(f"| {m['round']} | " + " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys) + " |")
    else:
        lines.append("(no gold labels: no metrics)")
    lines += ["", "## Teaching per round", "", "| round | " + " | ".join(TEACH) + " | seconds |", "|---|" + "---|" * (len(TEACH) + 1)]
    for m in ms[1:] if ms[0]["round"] == 0 else ms:
        vals = [(f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "-"))) for k in TEACH]
        lines.append(f"| {m['round']} | " + " | ".join(vals) + f" | {sum(m.get('seconds', {}).values()):.0f} |")
    lines += ["", "## Guard and teacher vs student (label-free estimates)", "",
              "| round | promoted | best round | guard | r teacher | r student | teacher weaker |", "|---|---|---|---|---|---|---|"]
    for m in ms:
        if m["round"] == 0:
            continue
        v = (m.get("views") or {}).get("teacher") or {}
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(f"| {m['round']} | {m.get('promoted', '-')} | {m.get('best_round', '-')} | "
                     f"{(m.get('guard') or {}).get('reason', '-')} | {f(v.get('r_teacher'))} | {f(v.get('r_student'))} | "
                     f"{m.get('teacher_weaker', '-')} |")

    if keys:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            xs = [m["round"] for m in ms if k in m]
            ax.plot(xs, [m[k] for m in ms if k in m], marker="o", label=k)
        ax.set_xlabel("round")
        ax.set_xticks([m["round"] for m in ms])
        ax.set_title("student metrics per round")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(rd.out / "report_metrics.png", dpi=100)
        plt.close(fig)
        lines += ["", "![metrics per round](report_metrics.png)"]

    last = max(r for r in rounds if r > 0) if any(r > 0 for r in rounds) else None
    if last is not None:
        from .data import load_docs

        j = pd.read_parquet(rd.round_dir(last) / "judgments.parquet")
        gold = {d.id: set(d.labels or ()) for d in load_docs(cfg["loop"]["docs"])}
        if any(gold.values()):
            g = [l in gold.get(d, set()) for d, l in zip(j["doc_id"], j["label_id"])]
            j["gold"] = g
            fig, ax = plt.subplots(figsize=(6, 3.5))
            bins = [i / 20 for i in range(21)]
            ax.hist(j.loc[~j["gold"], "p_yes"], bins=bins, alpha=0.6, density=True, label="non-gold candidates")
            ax.hist(j.loc[j["gold"], "p_yes"], bins=bins, alpha=0.6, density=True, label="gold candidates")
            ax.set_xlabel("teacher P(yes)")
            ax.set_title(f"round {last}: teacher P(yes) on the judged candidates")
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(rd.out / "report_p_yes.png", dpi=100)
            plt.close(fig)
            lines += ["", f"## Teacher answers, round {last}", "",
                      f"{int(j['gold'].sum())} gold and {int((~j['gold']).sum())} non-gold candidates judged; "
                      f"mean P(yes) {j.loc[j['gold'], 'p_yes'].mean():.3f} (gold) vs {j.loc[~j['gold'], 'p_yes'].mean():.3f} (non-gold).",
                      "", "![teacher P(yes)](report_p_yes.png)"]
    path = rd.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
