"""`lmtx prompts eval`: per template and teacher, how well P(yes) separates gold from non-gold candidates."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..store.data import Doc, LabelSet
from ..teacher.cache import AnswerCache
from .teacher_eval import candidate_pairs, evaluate_teacher


def _template(spec: str):
    from ..teacher.prompts import load_template

    return load_template(path=spec) if spec.endswith(".txt") or "/" in spec else load_template(spec)


def evaluate_prompts(
    teachers: list[str],
    prompts: list[str],
    docs: list[Doc],
    labels: LabelSet,
    n_pairs: int,
    j: int,
    encoder: str,
    decision: str,
    cache_path: str | Path,
    out: str | Path,
    urls: list[str] | None = None,
    log=print,
    describe: list[str] | None = None,
) -> list[dict]:
    """Each teacher x template (x teacher.describe form, ``describe``: yes, no, both) on the same labelled pairs."""
    from ..search.encoder import load_encoder
    from ..teacher.registry import make_teacher

    n_docs = max(1, math.ceil(n_pairs / j))
    docs = docs[:n_docs]
    pairs, frame = candidate_pairs(load_encoder(encoder), docs, labels, j, cache_for=encoder)
    cache = AnswerCache(cache_path)
    rows = []
    for tname in teachers:
        for pspec in prompts:
            tpl = _template(pspec)
            gold = {d.id: set(d.labels or ()) for d in docs}
            t = make_teacher(tname, tpl, gold=gold, threads=None, progress=log, urls=urls or None)
            forms = describe or ["yes"]
            if not tpl.shows_description:  # nothing to leave out: one form
                forms = forms[:1]
            for form in forms:
                r = evaluate_teacher(t, tpl, pairs, frame, cache, [decision], describe=form)
                rows.append(_row(tname, tpl, form, decision, r, frame))
    cache.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts_eval.json").write_text(json.dumps(rows, indent=1))
    _plot(rows, out / "prompts_eval.png")
    return rows


def _row(tname: str, tpl, form: str, decision: str, r: dict, frame) -> dict:
    rule = r["rules"][decision]
    return {
        "teacher": tname,
        "prompt": tpl.name if form == "yes" or not tpl.shows_description else f"{tpl.name} (describe {form})",
        "describe": form,
        "auc": r["auc"],
        "precision": rule["precision"],
        "recall": rule["recall"],
        "f1": rule["f1"],
        "yes_rate": rule["yes_rate"],
        "decision": decision,
        "mean_mass": r["mean_mass"],
        "prompt_tokens_per_pair": r["prompt_tokens_per_pair"],
        "seconds_per_pair": (r["seconds"] / r["asked"]) if r["asked"] else None,
        "asked": r["asked"],
        "pairs": r["pairs"],
        "docs": r["docs"],
        "top_p_yes_is_gold": r["top_p_yes_is_gold"],
        "p_yes": [float(x) for x in r.pop("_p_yes", [])],
        "gold": [bool(x) for x in frame["gold"]],
    }


def _plot(rows: list[dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ncol = min(3, len(rows))
    nrow = -(-len(rows) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.2 * nrow), squeeze=False)
    for ax in axes.ravel()[len(rows) :]:
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows):
        p, g = np.array(r["p_yes"]), np.array(r["gold"], bool)
        bins = np.linspace(0, 1, 21)
        ax.hist(p[~g], bins=bins, alpha=0.6, label="non-gold", density=True)
        ax.hist(p[g], bins=bins, alpha=0.6, label="gold", density=True)
        ax.set_title(
            f"{r['teacher']} / {r['prompt']}\nAUC {r['auc']:.3f}" if r["auc"] is not None else r["prompt"], fontsize=9
        )
        ax.set_xlabel("P(yes)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    head = "| teacher | prompt | AUC | precision | recall | F1 | yes-rate | yes+no mass | prompt tokens/pair | s/pair |"
    lines = [head, "|" + "---|" * 10]
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['teacher']} | {r['prompt']} | {f(r['auc'])} | {f(r['precision'])} | {f(r['recall'])} | "
            f"{f(r['f1'])} | {f(r['yes_rate'], 2)} | {f(r['mean_mass'], 2)} | "
            f"{f(r['prompt_tokens_per_pair'], 1)} | {f(r['seconds_per_pair'], 2)} |"
        )
    return "\n".join(lines)
