"""lmtx: zero-shot extreme multi-label tagging with an LLM as teacher (the LMTX method).

The Python API (lmtx.api) loads on first use, so ``import lmtx`` stays light:
``lmtx.Tagger``, ``lmtx.iterate``, ``lmtx.evaluate``, ``lmtx.teacher``, ``lmtx.RunConfig``.
"""

from .version import __version__

__all__ = [
    "__version__",
    "Tagger",
    "iterate",
    "evaluate",
    "teacher",
    "RunConfig",
    "RoundResult",
    "as_docs",
    "as_labels",
]


def __getattr__(name: str):
    if name in __all__[1:]:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'lmtx' has no attribute {name!r}")
