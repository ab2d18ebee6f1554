"""The student's losses (lmtx.learn.losses)."""

import numpy as np
import pytest
import torch

from lmtx.learn.losses import (
    InBatchTripletLoss,
    listwise_kl,
    ohnm_reference_inbatch,
    topk_softmax_inbatch,
    triplet_inbatch,
)


def _ohnm_port(input, target, margin=0.3, k=10, tau=0.1):
    """Line by line: the LMTX code's TripletMarginLossOHNM.forward (apply_softmax=True, reduction='mean')."""
    sim_p = torch.diagonal(input).view(-1, 1)
    similarities = torch.where(target == 0, input, torch.full_like(input, -50))
    _, indices = torch.topk(similarities, largest=True, dim=1, k=k)
    sim_n = input.gather(1, indices)
    loss = torch.max(torch.zeros_like(sim_p), sim_n - sim_p + margin)
    sim_n = sim_n.clone()  # the original writes in place into the gathered copy
    sim_n[loss == 0] = -50
    prob = torch.softmax(sim_n / tau, dim=1)
    loss = loss * prob
    return loss.mean()


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


def test_ohnm_matches_a_line_by_line_port():
    torch.manual_seed(0)
    for B, k in ((16, 10), (6, 10), (32, 3)):
        d = torch.nn.functional.normalize(torch.randn(B, 8), dim=-1)
        l = torch.nn.functional.normalize(torch.randn(B, 8), dim=-1)
        ids = torch.randint(0, B // 2, (B,))
        ids[0] = ids[1]  # a shared positive
        yes = torch.rand(B, B) < 0.2
        target = (ids[None, :] == ids[:, None]) | yes  # 1 where not a negative (diagonal included)
        ref = _ohnm_port(d @ l.T, target.float(), k=min(k, B))
        got = ohnm_reference_inbatch(d, l, ids, yes, k=k)
        assert got.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)
        # the weights carry gradient, as in the reference
        dd = d.clone().requires_grad_(True)
        ohnm_reference_inbatch(dd, l, ids, yes, k=k).backward()
        dr = d.clone().requires_grad_(True)
        _ohnm_port(dr @ l.T, target.float(), k=min(k, B)).backward()
        assert torch.allclose(dd.grad, dr.grad, atol=1e-6)


def test_listwise_kl_matches_naive_and_is_zero_at_the_target():
    torch.manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(3, 4, 4), dim=-1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    tgt = torch.rand(3, 4) * mask
    tgt = tgt / tgt.sum(1, keepdim=True)
    got = listwise_kl(d, c, mask, tgt, tau=0.1)
    naive = 0.0
    for i in range(3):
        n = int(mask[i].sum())
        logp = torch.log_softmax((c[i, :n] @ d[i]) / 0.1, 0)
        naive += float((tgt[i, :n] * (tgt[i, :n].log() - logp)).sum())
    assert got.item() == pytest.approx(naive / 3, rel=1e-5)
    # the student's own distribution as target: KL 0
    own = torch.softmax(torch.einsum("bh,bch->bc", d, c) / 0.1 + torch.log(mask.float()), 1)
    assert listwise_kl(d, c, mask, own, tau=0.1).item() == pytest.approx(0.0, abs=1e-5)


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
    assert (
        float(topk_softmax_inbatch(d, l, ids, None, 0.3, 7, 1e6)) <= float(triplet_inbatch(d, l, ids, None, 0.3)) + 1e-6
    )


def test_loss_module_gradient_moves_positive_closer():
    """Training on the loss alone makes each document's own label its nearest (it is not at the start), and
    the first step's gradient raises the positive's cosine more than any negative's."""
    torch.manual_seed(0)
    d = torch.randn(6, 8, requires_grad=True)
    l = torch.randn(6, 8)
    loss_fn = InBatchTripletLoss("triplet", margin=0.5)

    def nearest():
        return (torch.nn.functional.normalize(d, dim=-1) @ torch.nn.functional.normalize(l, dim=-1).T).argmax(1)

    assert (nearest() != torch.arange(6)).any()
    opt = torch.optim.SGD([d], lr=0.5)
    for step in range(200):
        loss = loss_fn(d, l, torch.arange(6))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            cos = torch.nn.functional.normalize(l, dim=-1)
            move = -d.grad @ cos.T  # first-order change of each d's dot product with each label
            assert (move.diagonal() > move.masked_fill(torch.eye(6, dtype=torch.bool), -1e9).max(1).values).all()
        opt.step()
    assert (nearest() == torch.arange(6)).all() and loss.item() < 1e-3


@pytest.mark.parametrize("kind", ["triplet", "topk"])
def test_false_negative_mask_takes_out_the_masked_negative(kind):
    """Masking (0, 1) -- the teacher said yes to document 1's positive for document 0 -- takes that negative out
    of document 0's term; with every negative masked the loss is zero."""
    torch.manual_seed(3)
    d = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    l = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    l[1] = torch.nn.functional.normalize(d[0] + 0.01 * torch.randn(8), dim=0)  # a strong violator for document 0
    ids = torch.arange(5)
    loss_fn = InBatchTripletLoss(kind, margin=0.3)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[0, 1] = True
    plain, masked = loss_fn(d, l, ids), loss_fn(d, l, ids, mask)
    assert masked < plain - 0.05
    # a batch of documents 0 and 1: masked, document 0 has no negative left, so only document 1's term remains
    pair_masked = loss_fn(d[:2], l[:2], ids[:2], mask[:2, :2])
    mask_both = mask[:2, :2].clone()
    mask_both[1, 0] = True
    assert pair_masked < loss_fn(d[:2], l[:2], ids[:2]) and loss_fn(d[:2], l[:2], ids[:2], mask_both) == 0


@pytest.mark.parametrize("kind", ["topk", "triplet", "ohnm"])
def test_scored_over_the_batch_positives_is_the_in_batch_loss(kind):
    """With no column beyond the batch's (distinct) positives, the score-matrix form is the in-batch loss."""
    torch.manual_seed(1)
    B = 12
    d = torch.randn(B, 8)
    l = torch.randn(B, 8)
    ids = torch.arange(B)
    yes = torch.rand(B, B) < 0.2
    yes.fill_diagonal_(False)
    fn = InBatchTripletLoss(kind, margin=0.3, k=4)
    valid = (ids[None, :] != ids[:, None]) & ~yes
    got = fn.scored(d, l, ids, valid)
    assert got.item() == pytest.approx(fn(d, l, ids, yes).item(), rel=1e-6)


def test_a_hard_negative_column_raises_the_loss_and_is_what_the_gradient_pushes_down():
    """A rejected candidate close to the document joins the negatives: the loss grows, and a step on it lowers
    that candidate's score for the document."""
    torch.manual_seed(2)
    B = 8
    d = torch.nn.functional.normalize(torch.randn(B, 16), dim=-1)
    l = torch.nn.functional.normalize(torch.randn(B, 16), dim=-1)
    ids = torch.arange(B)
    hard = torch.nn.functional.normalize(d[0] + 0.05 * torch.randn(16), dim=-1)  # near document 0
    labels = torch.cat([l, hard[None]])
    valid = torch.ones(B, B + 1, dtype=torch.bool)
    valid[ids, ids] = False
    fn = InBatchTripletLoss("topk", margin=0.3)
    plain = fn.scored(d, l, ids, valid[:, :B])
    dd = d.clone().requires_grad_(True)
    with_hard = fn.scored(dd, labels, ids, valid)
    assert with_hard.item() > plain.item()
    with_hard.backward()
    moved = torch.nn.functional.normalize(d[0] - 0.5 * dd.grad[0], dim=-1)
    assert float(moved @ hard) < float(d[0] @ hard)
