"""`lmtx report RUN`: a markdown report with PNG plots (metrics per round; teacher P(yes), gold vs not)."""

from __future__ import annotations

from pathlib import Path

from ..store.rundir import RunDir, read_json, read_parquet, write_text

KEYS = ["P@1", "P@3", "P@5", "R@5", "R@10", "nDCG@5", "PSP@5"]
TEACH = [
    "pseudo_positive_precision",
    "pseudo_positive_precision_teacher_only",
    "teacher_yes_rate",
    "teacher_yes_precision",
    "teacher_yes_recall",
    "teacher_auc",
    "student_auc",
    "fused_auc",
    "pairs_asked",
    "strong_pairs_asked",
    "guard_pairs_asked",
    "docs_with_yes",
]


def make_report(run: str | Path) -> Path:
    """Write RUN/report.md (and its PNG plots) from the finished rounds' metrics.json and the last round's
    judgments. Returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")

    rd = RunDir(run)
    rounds = rd.finished_rounds()
    if not rounds:
        raise ValueError(f"{run}: no finished round to report")
    ms = [read_json(rd.round_dir(r) / "metrics.json") for r in rounds]
    cfg = read_json(rd.out / "config.json")
    man = rd.manifest()
    keys = [k for k in KEYS if any(k in m for m in ms)]
    lines = (
        _header(rd, cfg, man)
        + _metrics_table(ms, keys)
        + _retrieval_section(rd, ms)
        + _teaching_table(ms)
        + _guard_table(ms)
    )
    if keys:
        lines += _metrics_plot(rd, ms, keys)
    trained = [r for r in rounds if r > 0]
    if trained:
        lines += _p_yes_section(rd, cfg, max(trained))
    path = rd.out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _header(rd: RunDir, cfg: dict, man: dict) -> list[str]:
    t, tr = cfg["teacher"], cfg["train"]
    return [
        f"# lmtx run report: {rd.out}",
        "",
        f"- teacher: {man.get('teacher', t['name'])}"
        + ("  **(SIMULATED: answers from gold labels, not a real teacher)**" if man.get("simulated") else ""),
        f"- prompt: {t['prompt_file'] or t['prompt']}, decision {t['decision']}, selection "
        f"{cfg['select']['strategy']}, loss {tr['loss']} (margin {tr['margin']}), start {tr['start']}",
        f"- encoder: {cfg['encoder']['model']}; candidates j = {cfg['index']['candidates']}; docs: "
        f"{cfg['loop']['docs']}",
        f"- merge with the initial encoder (train.merge_init): {tr.get('merge_init', 0.0)} of the initial weights "
        f"in each round's encoder" + ("" if tr.get("merge_init") else " (off)"),
        f"- best round (what `evaluate`/`tag --model {rd.out}` use): {man.get('best_round', '-')}",
    ]


def _metrics_table(ms: list[dict], keys: list[str]) -> list[str]:
    lines = ["", "## Student metrics per round (round 0 = the initial encoder)", ""]
    if not keys:
        return lines + ["(no gold labels: no metrics)"]
    unmerged = any("unmerged" in m for m in ms)
    extra = " unmerged P@1 |" if unmerged else ""
    lines += ["| round | " + " | ".join(keys) + " |" + extra, "|---|" + "---|" * (len(keys) + unmerged)]
    for m in ms:
        u = (f" {m['unmerged']['P@1']:.4f} |" if "unmerged" in m else " - |") if unmerged else ""
        lines.append(f"| {m['round']} | " + " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys) + " |" + u)
    return lines


def _retrieval_section(rd: RunDir, ms: list[dict]) -> list[str]:
    """Dense, lexical and the run's chosen ranking per round (P@1), the chosen and the best-on-gold weight, and a
    plot of the three."""
    rows = [m for m in ms if m.get("retrieval")]
    if not rows:
        return []
    import matplotlib.pyplot as plt

    f = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    lines = [
        "",
        "## Retrieval: dense, lexical (BM25) and the run's choice",
        "",
        "The chosen dense weight comes from the teacher's ratings of each weight's top-1 label on the guard's "
        "held-out documents (label-free); the best weight on gold is reported, never used.",
        "",
        "| round | dense P@1 | lexical P@1 | chosen | chosen P@1 | best weight on gold | its P@1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        ret = m["retrieval"]
        fin = ret.get("final") or {}
        by_w = ret.get("P@1_by_weight") or {}
        how = f"hybrid {fin['dense_weight']:g}" if fin.get("mode") == "hybrid" else fin.get("mode", "-")
        lines.append(
            f"| {m['round']} | {f(ret['dense']['P@1'])} | {f(ret['lexical']['P@1'])} | {how} | "
            f"{f(fin.get('P@1'))} | {ret.get('best_weight_on_gold', '-')} | "
            f"{f(max(by_w.values()) if by_w else None)} |"
        )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    r = [m["round"] for m in rows]
    ax.plot(r, [m["retrieval"]["dense"]["P@1"] for m in rows], marker="o", label="dense (the encoder)")
    ax.plot(r, [m["retrieval"]["lexical"]["P@1"] for m in rows], marker="s", label="lexical (BM25)")
    fr = [(m["round"], m["retrieval"]["final"]["P@1"]) for m in rows if m["retrieval"].get("final")]
    if fr:
        ax.plot([a for a, _ in fr], [b for _, b in fr], marker="^", label="chosen (what the run hands out)")
    ax.set_xlabel("round")
    ax.set_xticks(r)
    ax.set_ylabel("P@1")
    ax.set_title("retrieval per round")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rd.out / "report_retrieval.png", dpi=100)
    plt.close(fig)
    return lines + ["", "![retrieval per round](report_retrieval.png)"]


def _teaching_table(ms: list[dict]) -> list[str]:

    lines = [
        "",
        "## Teaching per round",
        "",
        "| round | " + " | ".join(TEACH) + " | seconds |",
        "|---|" + "---|" * (len(TEACH) + 1),
    ]
    for m in (m for m in ms if m["round"] > 0):
        vals = [(f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "-"))) for k in TEACH]
        lines.append(f"| {m['round']} | " + " | ".join(vals) + f" | {sum(m.get('seconds', {}).values()):.0f} |")
    return lines


def _guard_table(ms: list[dict]) -> list[str]:
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [
        "",
        "## Guard and teacher vs student (label-free estimates)",
        "",
        "| round | promoted | best round | guard | r teacher | r student | teacher weaker |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in (m for m in ms if m["round"] > 0):
        v = (m.get("views") or {}).get("teacher") or {}
        lines.append(
            f"| {m['round']} | {m.get('promoted', '-')} | {m.get('best_round', '-')} | "
            f"{(m.get('guard') or {}).get('reason', '-')} | {f(v.get('r_teacher'))} | "
            f"{f(v.get('r_student'))} | {m.get('teacher_weaker', '-')} |"
        )
    return lines


def _metrics_plot(rd: RunDir, ms: list[dict], keys: list[str]) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        ax.plot([m["round"] for m in ms if k in m], [m[k] for m in ms if k in m], marker="o", label=k)
    ax.set_xlabel("round")
    ax.set_xticks([m["round"] for m in ms])
    ax.set_title("student metrics per round")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(rd.out / "report_metrics.png", dpi=100)
    plt.close(fig)
    return ["", "![metrics per round](report_metrics.png)"]


def _p_yes_section(rd: RunDir, cfg: dict, last: int) -> list[str]:
    """The teacher's P(yes) on gold vs non-gold candidates of the last round (where the documents have gold)."""
    import matplotlib.pyplot as plt

    from ..store.data import load_docs

    j = read_parquet(rd.round_dir(last) / "judgments.parquet")
    gold = {d.id: set(d.labels or ()) for d in load_docs(cfg["loop"]["docs"])}
    if not any(gold.values()):
        return []
    j["gold"] = [l in gold.get(d, set()) for d, l in zip(j["doc_id"], j["label_id"])]
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
    return [
        "",
        f"## Teacher answers, round {last}",
        "",
        f"{int(j['gold'].sum())} gold and {int((~j['gold']).sum())} non-gold candidates judged; mean P(yes) "
        f"{j.loc[j['gold'], 'p_yes'].mean():.3f} (gold) vs {j.loc[~j['gold'], 'p_yes'].mean():.3f} (non-gold).",
        "",
        "![teacher P(yes)](report_p_yes.png)",
    ]
