"""Label encoding on CPU at scale: the encoder exported to ONNX, int8-quantized, run by onnxruntime in worker
processes.

Why this shape: int8 dynamic quantization with per-channel weight scales, one single-thread session per core, is
the fastest CPU encoding lmtx measured at a cosine of 0.99 to the float32 vectors; the figures per backend are in
benchmarks/results/pypi-sources.md. sentence-transformers' own ONNX backend needs optimum-onnx, which does not install
beside the transformers release lmtx uses, so the export is done here with ``torch.onnx.export`` and
``onnxruntime.quantization.quantize_dynamic``.

Only models that are a transformer followed by mean pooling (and optionally Normalize) are exported; the
output is always L2-normalized, as :func:`lmtx.search.encoder.embed`. Anything else falls back to ``embed``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import LABEL_BACKENDS as BACKENDS  # noqa: F401
from ..config import LARGE_LABEL_SET as AUTO_ONNX_FROM

CHUNK = 2048  # texts per task sent to a worker (length-sorted, so a chunk pads little)
BATCH = 16  # texts per onnxruntime call inside a worker


def embed(model, texts: list[str], batch_size: int = 64, show_progress: bool = False, desc: str = "") -> np.ndarray:
    """L2-normalized float32 embeddings, shape (len(texts), dim)."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


def pick_backend(backend: str, n_texts: int) -> str:
    from ..config import one_of

    one_of(backend, BACKENDS, "encoder.label_backend")
    if backend == "auto":
        return "onnx-int8" if n_texts >= AUTO_ONNX_FROM else "torch"
    return backend


def resolve_backend(model, backend: str, n_texts: int) -> str:
    """The backend that will really encode: pick_backend's choice, torch where onnx-int8 cannot export the model."""
    used = pick_backend(backend, n_texts)
    return "torch" if used == "onnx-int8" and not exportable(model) else used


def exportable(model) -> bool:
    """A transformer + mean pooling (+ Normalize) sentence-transformers model."""
    mods = list(model)
    if len(mods) < 2 or type(mods[0]).__name__ != "Transformer" or type(mods[1]).__name__ != "Pooling":
        return False
    pool = mods[1]
    if getattr(pool, "pooling_mode", None) not in (None, "mean"):
        return False
    if getattr(pool, "pooling_mode_mean_tokens", True) is not True:
        return False
    return all(type(m).__name__ == "Normalize" for m in mods[2:])


def export_int8(model, folder: Path) -> Path:
    """Export ``model``'s transformer to ONNX, quantize it to int8 (dynamic, per-channel), save its tokenizer
    beside it; returns the quantized model's path."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    auto = model[0].auto_model.eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    enc = model.tokenizer(
        ["an example label", "a second, somewhat longer example label text"], padding=True, return_tensors="pt"
    )
    f32 = folder / "model.onnx"
    dyn = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            _Hidden(auto),
            (enc["input_ids"], enc["attention_mask"]),
            str(f32),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "hidden": dyn},
            opset_version=17,
            dynamo=False,
        )
    out = folder / "model-int8.onnx"
    quantize_dynamic(
        str(f32),
        str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    f32.unlink()
    model.tokenizer.save_pretrained(str(folder))
    return out


_W: dict = {}


def _init_worker(onnx_path: str, tok_dir: str, max_len: int, threads: int):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    _W["sess"] = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    _W["tok"] = AutoTokenizer.from_pretrained(tok_dir)
    _W["max_len"] = max_len


def _encode_chunk(texts: list[str]) -> np.ndarray:
    sess, tok = _W["sess"], _W["tok"]
    parts = []
    for s in range(0, len(texts), BATCH):
        e = tok(texts[s : s + BATCH], padding=True, truncation=True, max_length=_W["max_len"], return_tensors="np")
        mask = e["attention_mask"].astype(np.int64)
        h = sess.run(None, {"input_ids": e["input_ids"].astype(np.int64), "attention_mask": mask})[0]
        m = mask[..., None].astype(np.float32)
        v = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        parts.append(v.astype(np.float32))
    return np.concatenate(parts)


def int8_chunks(texts: list[str]) -> list[np.ndarray]:
    """The positions of ``texts`` in the chunks onnx-int8 encodes, whatever the engine: sorted by (length, text),
    cut every CHUNK. Batches then pad little and hold the same texts whatever the input order or the process that
    encodes them; dynamic int8 scales activations per batch, so this keeps a label's vector independent of where it
    sits in the file and of which engine encoded it."""
    order = np.array(sorted(range(len(texts)), key=lambda i: (len(texts[i]), texts[i])), dtype=np.int64)
    return [order[s : s + CHUNK] for s in range(0, len(order), CHUNK)]


class Int8Session:
    """The int8 ONNX export of ``model`` loaded in this process (one export, then any number of chunks): what a Ray
    actor holds. ``self(texts)`` encodes one chunk of :func:`int8_chunks` exactly as encode_int8's workers do."""

    def __init__(self, model, threads: int = 1):
        with tempfile.TemporaryDirectory(prefix="lmtx-onnx-") as tmp:  # session and tokenizer load into memory
            path = export_int8(model, Path(tmp))
            _init_worker(str(path), tmp, int(model.max_seq_length or 256), threads)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return _encode_chunk(texts)


def encode_int8(
    model, texts: list[str], workers: int | None = None, show_progress: bool = False, desc: str = ""
) -> np.ndarray:
    """L2-normalized embeddings of ``texts`` from ``model`` exported to int8 ONNX, computed by ``workers``
    single-thread onnxruntime processes (default: one per core). Texts are sorted by length and sent in chunks;
    the result is in the input order, and the same for any order of the same texts."""
    import multiprocessing as mp

    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    workers = workers or os.cpu_count() or 1
    chunks = int8_chunks(texts)
    out = np.empty((len(texts), model.get_sentence_embedding_dimension()), dtype=np.float32)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=desc or "encoding (onnx-int8)", unit="text", smoothing=0.1)
    with tempfile.TemporaryDirectory(prefix="lmtx-onnx-") as tmp:
        path = export_int8(model, Path(tmp))
        args = (str(path), tmp, int(model.max_seq_length or 256), 1 if workers > 1 else (os.cpu_count() or 1))
        if workers == 1:
            _init_worker(*args)
            results = (_encode_chunk([texts[i] for i in c]) for c in chunks)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=args)
            results = pool.imap(_encode_chunk, [[texts[i] for i in c] for c in chunks])
        try:
            for c, emb in zip(chunks, results):
                out[c] = emb
                if bar is not None:
                    bar.update(len(c))
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            if bar is not None:
                bar.close()
    return out


def pool_devices() -> list[str]:
    """Devices of the torch-pool backend: LMTX_POOL_DEVICES (e.g. "cuda:0,cuda:1" or "cpu,cpu"), else every CUDA
    GPU, else one "cpu" process per core."""
    env = os.environ.get("LMTX_POOL_DEVICES", "").strip()
    if env:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"] * (os.cpu_count() or 1)


def encode_pool(
    model, texts: list[str], batch_size: int = 64, show_progress: bool = False, devices: list[str] | None = None
) -> np.ndarray:
    """sentence-transformers' multi-process encoding: one process per device (several GPUs, or CPU processes)."""
    pool = model.start_multi_process_pool(devices or pool_devices())
    try:
        emb = model.encode(
            texts,
            pool=pool,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
    finally:
        model.stop_multi_process_pool(pool)
    return np.ascontiguousarray(emb, dtype=np.float32)


def encode_labels(
    model,
    texts: list[str],
    backend: str = "auto",
    batch_size: int = 64,
    show_progress: bool = False,
    desc: str = "",
    log=None,
    workers: int | None = None,
) -> tuple[np.ndarray, str]:
    """Label embeddings with the chosen backend; returns (embeddings, backend used). ``workers``: onnx-int8's
    processes (default: one per core)."""
    used = resolve_backend(model, backend, len(texts))
    if log and used != pick_backend(backend, len(texts)):
        log("[lmtx] onnx-int8 label encoding needs a transformer + mean-pooling encoder; using torch")
    t0 = time.time()
    if used == "onnx-int8":
        emb = encode_int8(model, texts, workers, show_progress=show_progress, desc=desc)
    elif used == "torch-pool":
        emb = encode_pool(model, texts, batch_size, show_progress)
    else:
        emb = embed(model, texts, batch_size, show_progress, desc)
    if log and len(texts) >= AUTO_ONNX_FROM:
        dt = time.time() - t0
        log(f"[lmtx] encoded {len(texts)} labels with {used} in {dt:.0f}s ({len(texts) / max(dt, 1e-9):.0f}/s)")
    return emb, used
