"""lmtx: zero-shot extreme multi-label tagging with an LLM as teacher (the LMTX method)."""

from .version import __version__

__all__ = ["__version__"]
