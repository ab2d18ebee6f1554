"""SIMULATED teacher: answers from gold labels with a set error rate. A research and test tool only.

It never stands in for a real teacher: its model_id starts with ``SIMULATED`` and every output of a
run that uses it (console, config.json, metrics.json, judgments) says ``simulated``.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

from .base import Judgment, Pair, TeacherError


class SimulatedTeacher:
    simulated = True

    def __init__(self, gold: Mapping[str, set[str]], error_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise TeacherError(f"simulated teacher error rate must be in [0, 1], got {error_rate}")
        self.gold = gold
        self.error_rate = error_rate
        self.seed = seed
        self.model_id = f"SIMULATED(error={error_rate:g},seed={seed})"

    def describe(self) -> str:
        return f"SIMULATED teacher from gold labels, {self.error_rate:.0%} of answers flipped (research only)"

    def _u(self, pair: Pair) -> float:
        # deterministic per pair, so a rerun (and the cache) agree
        h = hashlib.sha256(f"{self.seed}\x00{pair.doc_id}\x00{pair.label_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        out = []
        for p in pairs:
            if p.doc_id not in self.gold:
                raise TeacherError(f"simulated teacher: document {p.doc_id!r} has no gold labels")
            yes = p.label_id in self.gold[p.doc_id]
            if self._u(p) < self.error_rate:
                yes = not yes
            out.append(Judgment(p_yes=1.0 if yes else 0.0, mass=1.0))
        return out
