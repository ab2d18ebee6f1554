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


def triplet_inbatch(d: torch.Tensor, l: torch.Tensor, label_ids: torch.Tensor,
                    yes_mask: torch.Tensor | None = None, margin: float = 0.3) -> torch.Tensor:
    """The paper's loss: sum over in-batch negatives k' of max(0, <d_i,l_k'> - <d_i,l_p> + margin),
    averaged over documents.

    d: (B, H) document embeddings; l: (B, H) embeddings of each document's pseudo-positive.
    """
    s = d @ l.T  # (B, B); s[i, j] = <d_i, l_j>
    pos = s.diagonal()[:, None]  # (B, 1)
    valid = negatives_mask(label_ids, yes_mask)
    hinge = torch.relu(s - pos + margin) * valid
    return hinge.sum(dim=1).mean()


def topk_softmax_inbatch(d: torch.Tensor, l: torch.Tensor, label_ids: torch.Tensor,
                         yes_mask: torch.Tensor | None = None, margin: float = 0.3, k: int = 10,
                         tau: float = 0.1) -> torch.Tensor:
    """The LMTX code's variant (NGAME-style): the k hardest valid in-batch negatives of each document,
    their hinges weighted by softmax(score / tau) over those k, averaged over documents."""
    s = d @ l.T  # (B, B)
    pos = s.diagonal()[:, None]
    valid = negatives_mask(label_ids, yes_mask)
    k = min(k, s.shape[1])
    neg = s.masked_fill(~valid, float("-inf"))
    top, idx = neg.topk(k, dim=1)  # (B, k)
    ok = torch.isfinite(top)
    w = torch.softmax((top / tau).masked_fill(~ok, float("-inf")), dim=1)
    w = torch.nan_to_num(w, nan=0.0).detach()  # weights select hard negatives; no gradient through them
    hinge = torch.relu(top.masked_fill(~ok, 0.0) - pos + margin) * ok
    return (w * hinge).sum(dim=1).mean()


class InBatchTripletLoss(nn.Module):
    def __init__(self, kind: str = "triplet", margin: float = 0.3, k: int = 10, tau: float = 0.1):
        super().__init__()
        self.kind, self.margin, self.k, self.tau = kind, margin, k, tau

    def forward(self, d, l, label_ids, yes_mask=None):
        d = nn.functional.normalize(d, dim=-1)
        l = nn.functional.normalize(l, dim=-1)
        if self.kind == "triplet":
            return triplet_inbatch(d, l, label_ids, yes_mask, self.margin)
        return topk_softmax_inbatch(d, l, label_ids, yes_mask, self.margin, self.k, self.tau)
