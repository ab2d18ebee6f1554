"""The shared bi-encoder: one SentenceTransformer embeds documents and labels (weights shared)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..config import LARGE_LABEL_SET
from .fast_encode import embed  # noqa: F401  (re-exported: the one way lmtx embeds texts)


def load_encoder(spec: str, max_seq_length: int | None = None, device: str = "cpu", progress=print):
    from sentence_transformers import SentenceTransformer

    from ..store.assets import ASSETS, AssetError, resolve_encoder

    path = resolve_encoder(spec, progress)
    if (Path(path) / ".verified").exists():  # a round's encoder written by lmtx: check it was not damaged since
        from ..store.assets import verify_folder

        verify_folder(
            Path(path),
            ".verified",
            f"encoder {spec}",
            "retrain that round (remove its folder and rerun) or use another round",
        )
    try:
        model = SentenceTransformer(path, device=device)
    except Exception as e:  # OSError (not found, offline), ValueError (not a model folder), ...
        raise AssetError(
            f"could not load encoder {spec!r}: {type(e).__name__}: {str(e)[:300]} (offline assets: "
            f"{', '.join(k for k, a in ASSETS.items() if a.kind == 'sentence-transformer')}; "
            f"or a local sentence-transformers folder)"
        ) from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def fingerprint_model(path: str) -> str:
    """Identity of an encoder folder (file names, sizes, mtimes) or of a name that is not a folder."""
    p = Path(path)
    h = hashlib.sha256(str(p.resolve() if p.exists() else path).encode())
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
                st = f.stat()
                h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def fingerprint_encoder(spec: str) -> str:
    """An encoder's identity by its folder: an asset name resolves to its fetched folder, so the same encoder named
    either way has one identity (label-matrix cache, tag's index and resume state)."""
    from ..store.assets import resolve_encoder

    return fingerprint_model(resolve_encoder(spec, lambda s: None))


def fingerprint_labels(labels, label_text: str) -> str:
    h = hashlib.sha256(label_text.encode())
    for l in labels.labels:
        h.update(f"{l.id}\x00{l.text(label_text)}\x01".encode())
    return h.hexdigest()[:16]


def label_embeddings(
    model,
    labels,
    label_text: str,
    batch_size: int = 64,
    cache_for: str | None = None,
    progress: bool = True,
    backend: str = "auto",
    log=None,
    engine=None,
) -> np.ndarray:
    """Every label's embedding. ``cache_for``: the encoder's spec or folder when its weights are fixed (the
    initial encoder): the matrix is kept under LMTX_HOME/label-emb by (model, label texts, backend) and reused by
    later runs. ``backend``: torch | onnx-int8 | auto (onnx-int8 from 50,000 labels; lmtx.search.fast_encode). Large
    label sets show a progress bar with an ETA. ``engine``: a started lmtx.search.ray_engine.RayEngine encodes them on
    its cluster (each actor loads the model from ``cache_for``); None: this process."""
    from .fast_encode import encode_labels, resolve_backend

    texts = [l.text(label_text) for l in labels.labels]
    path = None
    if cache_for is not None:
        from ..store.assets import lmtx_home

        used = resolve_backend(model, backend, len(texts))  # the key names the backend that really encodes
        key = f"{fingerprint_encoder(cache_for)}-{fingerprint_labels(labels, label_text)}"
        path = lmtx_home() / "label-emb" / (f"{key}.npy" if used == "torch" else f"{key}-{used}.npy")
        if path.exists():
            emb = np.load(path)
            if emb.shape[0] == len(texts):
                return emb
    if engine is not None and cache_for is not None:
        emb = engine.encode_labels(cache_for, texts, resolve_backend(model, backend, len(texts)), batch_size)
    else:
        emb, _ = encode_labels(
            model,
            texts,
            backend,
            batch_size,
            progress and len(texts) >= LARGE_LABEL_SET,
            f"encoding {len(texts)} labels",
            log,
        )
    if path is not None:
        from ..store.files import replacing

        with replacing(path) as tmp, open(tmp, "wb") as f:
            np.save(f, emb)
    return emb
