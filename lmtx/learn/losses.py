"""In-batch triplet losses of LMTX. The maths lives in functions of embeddings (testable without a model)."""

from __future__ import annotations

import torch
from torch import nn


def negatives_mask(label_ids: torch.Tensor, yes_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, B) bool: True where positive j of the batch may serve as a negative for document i.

    label_ids: (B,) label index of each document's positive. yes_mask: (B, B) True where document i's
    teacher said yes to label_ids[j] (masked as likely false negatives), or None for no masking.
    """
    valid = label_ids[None, :] != label_ids[:, None]  # same label as my positive: never a negative
    if yes_mask is not None:
        valid = valid & ~yes_mask
    return valid


def triplet_inbatch(
    d: torch.Tensor, l: torch.Tensor, label_ids: torch.Tensor, yes_mask: torch.Tensor | None = None, margin: float = 0.3
) -> torch.Tensor:
    """The paper's loss: sum over in-batch negatives k' of max(0, <d_i,l_k'> - <d_i,l_p> + margin),
    averaged over documents.

    d: (B, H) document embeddings; l: (B, H) embeddings of each document's pseudo-positive.
    """
    s = d @ l.T  # (B, B); s[i, j] = <d_i, l_j>
    return triplet_scores(s, s.diagonal()[:, None], negatives_mask(label_ids, yes_mask), margin)


def triplet_scores(s: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """The triplet loss on a score matrix: s (B, U) document-by-label scores, pos (B, 1) each document's score
    with its positive, valid (B, U) True where label u may serve as a negative for document i."""
    hinge = torch.relu(s - pos + margin) * valid
    return hinge.sum(dim=1).mean()


def topk_softmax_inbatch(
    d: torch.Tensor,
    l: torch.Tensor,
    label_ids: torch.Tensor,
    yes_mask: torch.Tensor | None = None,
    margin: float = 0.3,
    k: int = 10,
    tau: float = 0.1,
) -> torch.Tensor:
    """The LMTX code's variant (NGAME-style): the k hardest valid in-batch negatives of each document,
    their hinges weighted by softmax(score / tau) over those k, averaged over documents."""
    s = d @ l.T  # (B, B)
    return topk_softmax_scores(s, s.diagonal()[:, None], negatives_mask(label_ids, yes_mask), margin, k, tau)


def topk_softmax_scores(
    s: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, margin: float = 0.3, k: int = 10, tau: float = 0.1
) -> torch.Tensor:
    """The ``topk`` loss on a score matrix (see :func:`triplet_scores` for s, pos, valid)."""
    k = min(k, s.shape[1])
    neg = s.masked_fill(~valid, float("-inf"))
    top, idx = neg.topk(k, dim=1)  # (B, k)
    ok = torch.isfinite(top)
    w = torch.softmax((top / tau).masked_fill(~ok, float("-inf")), dim=1)
    w = torch.nan_to_num(w, nan=0.0).detach()  # weights select hard negatives; no gradient through them
    hinge = torch.relu(top.masked_fill(~ok, 0.0) - pos + margin) * ok
    return (w * hinge).sum(dim=1).mean()


def ohnm_reference_inbatch(
    d: torch.Tensor,
    l: torch.Tensor,
    label_ids: torch.Tensor,
    yes_mask: torch.Tensor | None = None,
    margin: float = 0.3,
    k: int = 10,
    tau: float = 0.1,
) -> torch.Tensor:
    """The LMTX code's loss as its code computes it (``TripletMarginLossOHNM`` with apply_softmax and
    reduction 'mean'), on in-batch negatives.

    How it differs from :func:`topk_softmax_inbatch` (lmtx's ``topk``):

    * the k hinges are averaged over batch x k (``topk`` sums over the k, averages over the batch);
    * the softmax(score / tau) weights carry gradient (``topk`` detaches them);
    * a negative that already satisfies the margin gets its score set to -50 before the softmax, so it
      takes (almost) no weight; the others share it;
    * masked entries (the positive, same-label and teacher-yes columns) score -50 for the top-k choice,
      but when a row has fewer than k valid negatives the choice falls on masked columns anyway and their
      real score is used (``topk`` drops them).

    d, l: (B, H) normalized; label_ids: (B,); yes_mask: (B, B) or None. Returns a scalar.
    """
    s = d @ l.T  # (B, B)
    return ohnm_scores(s, s.diagonal()[:, None], negatives_mask(label_ids, yes_mask), margin, k, tau)


def ohnm_scores(
    s: torch.Tensor, sim_p: torch.Tensor, valid: torch.Tensor, margin: float = 0.3, k: int = 10, tau: float = 0.1
) -> torch.Tensor:
    """The ``ohnm`` loss on a score matrix (see :func:`triplet_scores` for s, sim_p (the positive's), valid)."""
    k = min(k, s.shape[1])
    masked = torch.where(valid, s, torch.full_like(s, -50.0))
    _, idx = masked.topk(k, dim=1)  # (B, k)
    sim_n = s.gather(1, idx)  # (B, k): real scores, masked columns included when chosen
    hinge = torch.clamp(sim_n - sim_p + margin, min=0.0)
    w = torch.softmax(sim_n.masked_fill(hinge == 0, -50.0) / tau, dim=1)  # gradient flows through w
    return (hinge * w).mean()


def listwise_kl(
    d: torch.Tensor, cand: torch.Tensor, cand_mask: torch.Tensor, target: torch.Tensor, tau: float = 0.05
) -> torch.Tensor:
    """Listwise distillation: KL(target || softmax(<d_i, c_ik> / tau)) over each document's judged candidates.

    d: (B, H) normalized documents; cand: (B, C, H) normalized candidate labels; cand_mask: (B, C) True
    where a candidate exists; target: (B, C) a distribution over each row's candidates (0 where masked).
    """
    s = torch.einsum("bh,bch->bc", d, cand) / tau  # (B, C)
    logp = torch.log_softmax(s.masked_fill(~cand_mask, float("-inf")), dim=1)
    t = target.clamp(min=0)
    kl = t * (torch.log(t.clamp(min=1e-12)) - logp.masked_fill(~cand_mask, 0.0))
    return kl.masked_fill(~cand_mask, 0.0).sum(dim=1).mean()


LOSSES = ("topk", "triplet", "ohnm")


class InBatchTripletLoss(nn.Module):
    """In-batch triplet losses of LMTX, over (document, pseudo-positive) pairs.

    References: Jain et al., "LMTX" (the paper's triplet loss); Dahiya et al., "NGAME" (online hard
    negative mining with softmax weights), as in the LMTX code.

    Inputs: d (B, H) document embeddings, l (B, H) each document's positive label embedding, label_ids
    (B,) the positives' label indices, yes_mask (B, B) True where document i's teacher said yes to
    positive j (never a negative), or None. Embeddings are L2-normalized here.

    kind: ``topk`` (default; the k hardest in-batch negatives, hinges weighted by detached
    softmax(score / tau), summed over k, averaged over documents), ``triplet`` (the paper: every in-batch
    negative), ``ohnm`` (the LMTX code's TripletMarginLossOHNM, see :func:`ohnm_reference_inbatch`).
    """

    def __init__(self, kind: str = "topk", margin: float = 0.3, k: int = 10, tau: float = 0.1):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; use one of {LOSSES}")
        self.kind, self.margin, self.k, self.tau = kind, margin, k, tau

    def forward(self, d, l, label_ids, yes_mask=None):
        d = nn.functional.normalize(d, dim=-1)
        l = nn.functional.normalize(l, dim=-1)
        s = d @ l.T  # (B, B)
        return self._on_scores(s, s.diagonal()[:, None], negatives_mask(label_ids, yes_mask))

    def _on_scores(self, s, pos, valid):
        if self.kind == "triplet":
            return triplet_scores(s, pos, valid, self.margin)
        if self.kind == "ohnm":
            return ohnm_scores(s, pos, valid, self.margin, self.k, self.tau)
        return topk_softmax_scores(s, pos, valid, self.margin, self.k, self.tau)

    def scored(self, d, labels, pos_col, valid):
        """The same loss over any set of label columns, not only the batch's positives (hard negatives beside
        the in-batch ones): d (B, H) documents, labels (U, H) every label embedding of the batch, pos_col (B,)
        each document's positive column in ``labels``, valid (B, U) True where label u may serve as a negative
        for document i (never its positive). Embeddings are L2-normalized here."""
        d = nn.functional.normalize(d, dim=-1)
        labels = nn.functional.normalize(labels, dim=-1)
        s = d @ labels.T  # (B, U)
        return self._on_scores(s, s.gather(1, pos_col[:, None]), valid)


class ListwiseDistillLoss(nn.Module):
    """Listwise distillation over each document's judged candidates: KL(target || softmax(<d, c> / tau)).

    References: Sun et al., "Is ChatGPT Good at Search? (RankGPT)" and Lee et al., "Gecko" (retrievers
    trained on an LLM's scores over a candidate list).

    Inputs: d (B, H) document embeddings; cand (B, C, H) candidate label embeddings; cand_mask (B, C) True
    where a candidate exists (rows may have fewer than C); target (B, C) a distribution over each row's
    candidates (the teacher's or fused scores, normalized; 0 where masked). Embeddings are L2-normalized here.
    """

    def __init__(self, tau: float = 0.05):
        super().__init__()
        self.tau = tau

    def forward(self, d, cand, cand_mask, target):
        d = nn.functional.normalize(d, dim=-1)
        cand = nn.functional.normalize(cand, dim=-1)
        return listwise_kl(d, cand, cand_mask, target, self.tau)
