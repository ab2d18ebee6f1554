"""The LMTX loop: rounds of retrieve -> teach -> fuse -> select -> train -> guard -> evaluate."""

from .run import RoundResult, Runtime, iterate

__all__ = ["RoundResult", "Runtime", "iterate"]
