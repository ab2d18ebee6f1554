import numpy as np
import torch

from lmtx.index import LabelIndex, exact_topk, recall_at_k
from lmtx.losses import InBatchTripletLoss, topk_softmax_inbatch, triplet_inbatch


def _unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_recall_against_exact_and_save_load(tmp_path):
    labels, queries = _unit(3000, 32, 0), _unit(300, 32, 1)
    idx = LabelIndex(labels, "hnsw", M=16, ef_construction=200, ef_search=200)
    got, sims = idx.query(queries, 10)
    ref, ref_sims = exact_topk(queries, labels, 10)
    assert recall_at_k(got, ref) >= 0.95
    assert np.allclose(sims[:, 0], (queries * labels[got[:, 0]]).sum(1), atol=1e-5)  # cosine, best first
    assert (np.diff(ref_sims, axis=1) <= 1e-6).all()
    idx.save(tmp_path / "ix")
    again = LabelIndex.load(tmp_path / "ix")
    g2, s2 = again.query(queries, 10)
    assert (g2 == got).all() and np.allclose(s2, sims)


def test_exact_matches_bruteforce():
    labels, queries = _unit(50, 8, 2), _unit(20, 8, 3)
    idx, sims = LabelIndex(labels, "exact").query(queries, 5)
    full = queries @ labels.T
    assert (idx == np.argsort(-full, axis=1)[:, :5]).all()


def _naive(d, l, label_ids, yes, margin):
    total = 0.0
    B = len(d)
    for i in range(B):
        pos = float(d[i] @ l[i])
        for j in range(B):
            if label_ids[j] == label_ids[i] or (yes is not None and yes[i][j]):
                continue
            total += max(0.0, float(d[i] @ l[j]) - pos + margin)
    return total / B


def test_triplet_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1)
    l = torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1)
    label_ids = torch.tensor([0, 1, 2, 3, 3, 5, 6, 7, 8, 9, 1, 11])  # duplicates are never negatives
    yes = torch.rand(12, 12, generator=g) < 0.2
    for mask in (None, yes):
        got = float(triplet_inbatch(d, l, label_ids, mask, 0.3))
        ref = _naive(d.numpy(), l.numpy(), label_ids.tolist(), None if mask is None else mask.tolist(), 0.3)
        assert abs(got - ref) < 1e-5


def test_topk_variant_weights_hardest_negatives():
    g = torch.Generator().manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    l = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    ids = torch.arange(8)
    got = float(topk_softmax_inbatch(d, l, ids, None, margin=0.3, k=3, tau=0.1))
    s = (d @ l.T).numpy()
    ref = 0.0
    for i in range(8):
        negs = sorted([s[i, j] for j in range(8) if j != i], reverse=True)[:3]
        w = np.exp(np.array(negs) / 0.1)
        w /= w.sum()
        ref += sum(wk * max(0, n - s[i, i] + 0.3) for wk, n in zip(w, negs))
    assert abs(got - ref / 8) < 1e-5
    # with k = all negatives and tau -> large, it is the mean hinge: bounded by the triplet sum
    assert float(topk_softmax_inbatch(d, l, ids, None, 0.3, 7, 1e6)) <= float(triplet_inbatch(d, l, ids, None, 0.3)) + 1e-6


def test_loss_module_gradient_moves_positive_closer():
    torch.manual_seed(0)
    d = torch.randn(6, 8, requires_grad=True)
    l = torch.randn(6, 8)
    loss_fn = InBatchTripletLoss("triplet", margin=0.5)
    opt = torch.optim.SGD([d], lr=0.5)
    first = None
    for _ in range(20):
        loss = loss_fn(d, l, torch.arange(6))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
