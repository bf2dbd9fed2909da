"""Sequence -> vector pooling over real (non-pad) tokens, so padding never changes a prediction."""

import torch
from torch import Tensor

POOLINGS = ("mean", "max", "last", "cls")


def pool(h: Tensor, pad_mask: Tensor | None, mode: str) -> Tensor:
    """h: (B, T, D), pad_mask: (B, T) True at padding; returns (B, D).
    `max` keeps each feature's largest value (CNN text classifiers); `last` is the state of
    the last real token: the one pooling that suits a causal encoder."""
    B, T, _ = h.shape
    real = torch.ones(B, T, dtype=torch.bool, device=h.device) if pad_mask is None else ~pad_mask
    if mode == "mean":
        w = real.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1)
    if mode == "max":  # the strongest match of each feature anywhere in the text
        lowest = torch.finfo(h.dtype).min
        return h.masked_fill(~real.unsqueeze(-1), lowest).amax(1)
    if mode == "last":
        last = real.long().cumsum(1).argmax(1)  # (B,) index of the last real token
        return h[torch.arange(B, device=h.device), last]
    if mode == "cls":
        first = real.long().argmax(1)  # (B,) first real token (left padding safe)
        return h[torch.arange(B, device=h.device), first]
    raise ValueError(f"task.pooling={mode!r} is not one of {POOLINGS}")
