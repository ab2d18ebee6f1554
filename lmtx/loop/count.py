"""`lmtx iterate --dry-run`: how many teacher calls a run needs, before anything is loaded."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..search.hybrid import WEIGHTS
from ..store.data import load_docs, load_labels
from .job import guard_split


def count_pairs(cfg: RunConfig, out: str | Path) -> dict:
    """What the teacher will be asked in round 1 (later rounds ask only pairs not cached yet)."""
    labels = load_labels(cfg.loop.labels)
    all_docs = load_docs(cfg.loop.docs, labels, cfg.loop.max_docs)
    docs, guard = guard_split(all_docs, cfg)
    j = min(cfg.index.candidates, len(labels))
    n = len(docs) * j
    # the guard: each encoder's top-1 per held-out document (the initial and the first round's in round 1); with
    # retrieval.mode auto, the top-1 of every dense weight compared (at most len(WEIGHTS) labels; most coincide)
    per = len(WEIGHTS) if cfg.retrieval.mode == "auto" else 1
    g = 2 * len(guard) * per
    return {
        "docs": len(docs),
        "guard_docs": len(guard),
        "labels": len(labels),
        "candidates": j,
        "pairs_per_round_max": n + g,
        "rounds": cfg.loop.rounds,
        "pairs_total_max": n * cfg.loop.rounds + len(guard) * per * (cfg.loop.rounds + 1),
        "strong_budget": cfg.teacher.strong_budget if cfg.teacher.strong else 0,
    }
