"""The onnx-int8 label encoder: the same vectors as SentenceTransformer.encode, up to int8 rounding."""

import numpy as np
import pytest
from conftest import build_tiny_encoder

from lmtx.config import ConfigError, EncoderConfig
from lmtx.search.encoder import embed, load_encoder
from lmtx.search.fast_encode import encode_int8, encode_labels, encode_pool, exportable, pick_backend


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_encoder(build_tiny_encoder(tmp_path_factory.mktemp("enc")))


TEXTS = [
    f"label {i} about {w} and {v}"
    for i, (w, v) in enumerate(
        zip(["parsing", "networks", "audio", "web", "games"] * 8, ["tools", "servers", "video"] * 14)
    )
]


@pytest.mark.parametrize("workers", [1, 2])
def test_int8_matches_torch(tiny, workers):
    ref = embed(tiny, TEXTS)
    got = encode_int8(tiny, TEXTS, workers=workers)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * ref).sum(1)
    assert cos.min() > 0.98, cos.min()  # int8 rounding only; the order of the input is kept
    # a permutation of the input gives the same rows, permuted (the length sort is undone)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    np.testing.assert_allclose(encode_int8(tiny, [TEXTS[i] for i in perm], workers=workers), got[perm], atol=1e-5)


def test_backend_choice(tiny):
    assert pick_backend("auto", 10) == "torch" and pick_backend("auto", 50_000) == "onnx-int8"
    assert exportable(tiny)
    emb, used = encode_labels(tiny, TEXTS[:3], "torch")
    assert used == "torch" and emb.shape[0] == 3
    with pytest.raises(ConfigError, match="label_backend"):
        EncoderConfig(label_backend="gpu")


def test_torch_pool_matches_torch(tiny):
    """sentence-transformers' multi-process pool (the scale-out path for several GPUs): the same vectors."""
    ref = embed(tiny, TEXTS)
    np.testing.assert_allclose(encode_pool(tiny, TEXTS, devices=["cpu", "cpu"]), ref, atol=1e-5)


def test_cache_names_the_backend_that_really_encoded(tiny, tmp_path, monkeypatch):
    """A model onnx-int8 cannot export is encoded with torch, and its cached matrix says torch (no -onnx-int8)."""
    import lmtx.search.fast_encode as F
    from lmtx.search.encoder import label_embeddings
    from lmtx.store.data import Label, LabelSet

    monkeypatch.setenv("LMTX_HOME", str(tmp_path))
    labels = LabelSet([Label(f"l{i}", f"n{i}", t) for i, t in enumerate(TEXTS[:6])])
    monkeypatch.setattr(F, "exportable", lambda model: False)
    src = tmp_path / "enc"
    tiny.save(str(src))
    emb = label_embeddings(tiny, labels, "description", cache_for=str(src), backend="onnx-int8", progress=False)
    names = [p.name for p in (tmp_path / "label-emb").glob("*.npy")]
    assert len(names) == 1 and "onnx" not in names[0], names
    np.testing.assert_allclose(emb, embed(tiny, TEXTS[:6]), atol=1e-6)
