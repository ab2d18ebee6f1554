"""Teacher decisions (P(yes) -> yes/no) and pseudo-positive selection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def decide(j: pd.DataFrame, rule: str) -> np.ndarray:
    """Boolean yes per judged pair. ``j`` has columns doc, p_yes (one row per (doc, candidate))."""
    from ..config import check_decision

    check_decision(rule)
    kind, _, val = rule.partition(":")
    x = float(val)
    p = j["p_yes"].to_numpy()
    possible = p > 0  # a zero-probability yes is never a yes, whatever the rule
    if "mass" in j:
        possible &= j["mass"].to_numpy() > 0  # nor an answer without any yes/no mass (unreadable)
    if kind == "abs":
        return (p >= x) & possible
    if kind == "quantile":
        if len(p) == 0:
            return possible
        return (p >= np.quantile(p, x)) & possible
    if kind == "rel":
        best = j.groupby("doc")["p_yes"].transform("max").to_numpy()
        return (p >= best - x - 1e-12) & possible
    raise ValueError(f"unknown decision rule {rule!r}")


@dataclass
class Example:
    doc: int  # index into the training documents
    choices: list[int]  # label indices a positive is drawn from (one, unless strategy=random)
    yes: frozenset[int]  # every label the teacher said yes to for this doc (false-negative mask)
    cands: tuple[int, ...] = ()  # every judged candidate of the doc (listwise distillation)
    target: tuple[float, ...] = ()  # a distribution over ``cands`` (the fused scores' softmax)


def soft_targets(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = scores / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def select_positives(j: pd.DataFrame, strategy: str) -> list[Example]:
    """One training example per document with at least one yes (``all``: one per yes-label).

    ``j`` columns: doc, label, p_yes, similarity, yes (and ``fused`` for strategy ``fused``: the
    positive is the candidate with the highest fused score, which need not be a teacher yes; it joins
    the document's yes-set). Documents without a yes sit out.
    """
    out: list[Example] = []
    has_yes = j.groupby("doc")["yes"].transform("any")
    for doc, g in j[has_yes].groupby("doc", sort=True):
        all_labels = g["label"].to_numpy()
        soft = ()
        if "fused" in g:
            soft = (tuple(int(x) for x in all_labels), tuple(float(x) for x in soft_targets(g["fused"].to_numpy())))
        g_yes = g[g["yes"]]
        labels = g_yes["label"].to_numpy()
        yes = frozenset(int(x) for x in labels)
        if strategy == "fused":
            best = int(all_labels[g["fused"].to_numpy().argmax()])
            out.append(Example(int(doc), [best], yes | {best}, *soft))
        elif strategy == "similarity":
            out.append(Example(int(doc), [int(labels[g_yes["similarity"].to_numpy().argmax()])], yes, *soft))
        elif strategy == "p_yes":
            out.append(Example(int(doc), [int(labels[g_yes["p_yes"].to_numpy().argmax()])], yes, *soft))
        elif strategy == "random":
            out.append(Example(int(doc), [int(x) for x in labels], yes, *soft))
        elif strategy == "all":
            out.extend(Example(int(doc), [int(x)], yes, *soft) for x in labels)
        else:
            raise ValueError(f"unknown selection strategy {strategy!r}")
    return out
