"""One round of fine-tuning the shared bi-encoder on pseudo-positives.

A small explicit loop over the SentenceTransformer's own tokenize/forward: the false-negative mask
needs, for every document, the labels the teacher said yes to, and the positive may be re-drawn each
step (strategy ``random``), which does not fit a fixed (anchor, positive) dataset.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Sequence

import torch

from ..config import LARGE_LABEL_SET, TrainConfig
from ..store import drill
from .losses import InBatchTripletLoss, ListwiseDistillLoss
from .select import Example


def _embed(model, texts: list[str], max_len: int, device) -> torch.Tensor:
    model.max_seq_length = max_len
    feats = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    feats = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in feats.items()}
    return model(feats)["sentence_embedding"]


def effective_batch_size(n_examples: int, cfg: TrainConfig) -> int:
    """cfg.batch_size, shrunk for small rounds so that an epoch has at least cfg.min_steps steps (never below 16,
    so that each document still has 15 in-batch negatives). The compute per epoch is the same either way."""
    if cfg.min_steps <= 1 or n_examples <= 0:
        return cfg.batch_size
    return max(min(16, cfg.batch_size), min(cfg.batch_size, math.ceil(n_examples / cfg.min_steps)))


def train_round(
    model,
    doc_texts: Sequence[str],
    label_texts: Sequence[str],
    examples: list[Example],
    cfg: TrainConfig,
    seed: int = 0,
    progress: bool = True,
    opt_state: dict | None = None,
) -> dict:
    """Fine-tune ``model`` in place. Returns a small log: steps, mean loss, final loss.

    ``opt_state``: a dict carried across rounds; when it holds ``"adamw"`` (an optimizer state_dict from an
    earlier round) training continues from those moments instead of a fresh AdamW, and the state after this
    round is stored back under ``"adamw"``.
    """
    from tqdm.auto import tqdm

    if len(examples) < 2:
        return {"steps": 0, "loss_mean": None, "examples": len(examples), "skipped": "fewer than 2 examples"}
    device = next(model.parameters()).device
    old_len = model.max_seq_length
    rng = random.Random(seed)
    torch.manual_seed(seed)
    loss_fn = InBatchTripletLoss(cfg.loss, cfg.margin, cfg.topk, cfg.tau)
    distill_fn = ListwiseDistillLoss(cfg.distill_tau)
    batch_size = effective_batch_size(len(examples), cfg)
    total = math.ceil(len(examples) / batch_size) * cfg.epochs
    opt, sched, warm = _optimizer(model, cfg, total, opt_state)
    checkpointed = _wants_checkpointing(cfg.checkpointing, len(label_texts)) and _set_checkpointing(model, True)
    model.train()
    losses = []
    bar = tqdm(total=total, desc="training", unit="step", disable=not progress)
    try:
        for _ in range(cfg.epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for s in range(0, len(order), batch_size):
                batch = [examples[i] for i in order[s : s + batch_size]]
                if len(batch) < 2:
                    continue
                loss = _batch_loss(model, batch, doc_texts, label_texts, cfg, rng, device, loss_fn, distill_fn)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                drill.point("train:step")
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:  # an interrupted round leaves the model as it found it: eval mode, no checkpointing, its max length
        bar.close()
        model.eval()
        if checkpointed:
            _set_checkpointing(model, False)
        model.max_seq_length = old_len
    if opt_state is not None:
        opt_state["adamw"] = opt.state_dict()
    return {
        "steps": len(losses),
        "examples": len(examples),
        "batch_size": batch_size,
        "warmup_steps": warm,
        "checkpointing": checkpointed,
        "loss_mean": sum(losses) / max(1, len(losses)),
        "loss_last": losses[-1] if losses else None,
    }


def _wants_checkpointing(mode: str, n_labels: int) -> bool:
    """train.checkpointing: on, off, or auto (on from config.LARGE_LABEL_SET labels)."""

    return mode == "on" or (mode == "auto" and n_labels >= LARGE_LABEL_SET)


def _set_checkpointing(model, on: bool) -> bool:
    """Turn activation checkpointing of the encoder's transformer on or off; True if it is now on. Models without
    it train as they are."""
    hf = getattr(model[0], "auto_model", None) if len(model) else None
    if hf is None or not getattr(hf, "supports_gradient_checkpointing", False):
        return False
    kw = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers' newer name; older ones have only the other
        hf.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kw
        ) if on else hf.activation_checkpointing_disable()
    else:
        hf.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=kw
        ) if on else hf.gradient_checkpointing_disable()
    return on


def _optimizer(model, cfg: TrainConfig, total: int, opt_state: dict | None):
    """AdamW (continuing the carried moments when opt_state holds them) and a linear schedule with warm-up."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    if opt_state is not None and opt_state.get("adamw"):
        opt.load_state_dict(copy.deepcopy(opt_state["adamw"]))  # the caller's copy stays the best round's
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] = cfg.lr
    warm = min(cfg.warmup_steps, total // 10)
    if cfg.min_steps > 1 and total > 1:
        # a fresh AdamW's first update moves every weight by lr (a sign step); one warm-up step (lr 0) fills the
        # moments first
        warm = max(1, warm)
    return opt, get_linear_schedule_with_warmup(opt, warm, total), warm


def _batch_loss(
    model,
    batch: list[Example],
    doc_texts,
    label_texts,
    cfg: TrainConfig,
    rng: random.Random,
    device,
    loss_fn: InBatchTripletLoss,
    distill_fn: ListwiseDistillLoss,
) -> torch.Tensor:
    """One batch: each document's positive (re-drawn among its choices), the in-batch triplet loss with
    false-negative masking, plus the listwise distillation term where every example carries candidates."""
    pos = [rng.choice(e.choices) if len(e.choices) > 1 else e.choices[0] for e in batch]
    distill = cfg.distill > 0 and all(e.cands for e in batch)
    # hard negatives: the candidates each document's teacher said no to (its positive and yes-labels stay out)
    hard = (
        {c for e, p in zip(batch, pos) for c in e.cands if c not in e.yes and c != p} if cfg.hard_negatives else set()
    )
    uniq = sorted(set(pos) | hard | ({c for e in batch for c in e.cands} if distill else set()))
    where = {l: i for i, l in enumerate(uniq)}
    d = _embed(model, [doc_texts[e.doc] for e in batch], cfg.max_doc_length, device)  # (B, H)
    lu = _embed(model, [label_texts[l] for l in uniq], cfg.max_label_length, device)  # (U, H)
    if hard:
        cols = sorted(set(pos) | hard)  # every positive of the batch and every rejected candidate: the negatives
        neg = torch.tensor(
            [[c != p and not (cfg.fn_mask and c in e.yes) for c in cols] for e, p in zip(batch, pos)], device=device
        )
        cpos = {c: i for i, c in enumerate(cols)}
        loss = loss_fn.scored(
            d, lu[torch.tensor([where[c] for c in cols], device=device)],
            torch.tensor([cpos[p] for p in pos], device=device), neg,
        )  # fmt: skip
    else:
        l = lu[torch.tensor([where[p] for p in pos], device=device)]  # (B, H)
        yes_mask = None
        if cfg.fn_mask:
            yes_mask = torch.tensor([[p in e.yes for p in pos] for e in batch], device=device)
        loss = loss_fn(d, l, torch.tensor(pos, device=device), yes_mask)
    if not distill:
        return loss
    C = max(len(e.cands) for e in batch)
    ci = torch.zeros((len(batch), C), dtype=torch.long, device=device)
    cm = torch.zeros((len(batch), C), dtype=torch.bool, device=device)
    tg = torch.zeros((len(batch), C), device=device)
    for i, e in enumerate(batch):
        ci[i, : len(e.cands)] = torch.tensor([where[c] for c in e.cands])
        cm[i, : len(e.cands)] = True
        tg[i, : len(e.cands)] = torch.tensor(e.target)
    return loss + cfg.distill * distill_fn(d, lu[ci], cm, tg)  # cand: (B, C, H)


def merge_weights(out, init: dict, trained, share_init: float) -> None:
    """``out``'s weights := share_init * init + (1 - share_init) * trained's (floating-point tensors; the rest, e.g.
    position ids, are trained's). ``init``: the initial encoder's state_dict (train.merge_init, WiSE-FT)."""
    with torch.no_grad():
        mixed = {
            k: (share_init * init[k].to(v.device) + (1 - share_init) * v) if v.is_floating_point() else v
            for k, v in trained.state_dict().items()
        }
        out.load_state_dict(mixed)
