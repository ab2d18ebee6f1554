"""The shared bi-encoder: one SentenceTransformer embeds documents and labels (weights shared)."""

from __future__ import annotations

import numpy as np


def load_encoder(spec: str, max_seq_length: int | None = None, device: str = "cpu", progress=print):
    from sentence_transformers import SentenceTransformer

    from .assets import resolve_encoder

    path = resolve_encoder(spec, progress)
    try:
        model = SentenceTransformer(path, device=device)
    except OSError as e:
        raise RuntimeError(f"could not load encoder {spec!r} (no model hub here: give a local folder): {e}") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def embed(model, texts: list[str], batch_size: int = 64, show_progress: bool = False, desc: str = "") -> np.ndarray:
    """L2-normalized float32 embeddings, shape (len(texts), dim)."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)
