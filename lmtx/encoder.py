"""The shared bi-encoder: one SentenceTransformer embeds documents and labels (weights shared)."""

from __future__ import annotations

import numpy as np


def load_encoder(spec: str, max_seq_length: int | None = None, device: str = "cpu", progress=print):
    from sentence_transformers import SentenceTransformer

    from .assets import ASSETS, AssetError, resolve_encoder

    path = resolve_encoder(spec, progress)
    try:
        model = SentenceTransformer(path, device=device)
    except Exception as e:  # OSError (not found, offline), ValueError (not a model folder), ...
        raise AssetError(f"could not load encoder {spec!r}: {type(e).__name__}: {str(e)[:300]} (offline assets: "
                         f"{', '.join(k for k, a in ASSETS.items() if a.kind == 'sentence-transformer')}; "
                         f"or a local sentence-transformers folder)") from None
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
