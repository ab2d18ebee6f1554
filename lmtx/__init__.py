"""lmtx: zero-shot extreme multi-label tagging with an LLM as teacher (the LMTX method)."""

__version__ = "0.1.0"
