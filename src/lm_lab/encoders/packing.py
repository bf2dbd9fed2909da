"""Packed sequences: several short sequences share one row, each as if it were alone.

`segments` (B, T) long numbers the sequences of each row (any ids; a sequence is a run of
equal ids, padding its own run). From it come the two things an encoder needs to keep them
apart: per-token positions that restart at each sequence's first token, and a block-diagonal
causal attention mask (a token attends only to earlier tokens of its own sequence). Built once
per forward by `LayerStack` and handed to every layer, so each block reuses the same mask.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Packing:
    positions: Tensor  # (B, T) long: position of each token within its own sequence
    mask: Tensor  # (B, 1, T, T) bool: True where query t may attend to key s

    @classmethod
    def of(cls, segments: Tensor) -> "Packing":
        B, T = segments.shape
        columns = torch.arange(T, device=segments.device).expand(B, T)  # (B, T)
        starts = torch.ones_like(segments, dtype=torch.bool)  # (B, T) first token of a run
        starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
        first = torch.where(starts, columns, 0).cummax(dim=1).values  # (B, T) run's first column
        same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
        past = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()  # (T, T)
        return cls(columns - first, (same & past)[:, None])  # the diagonal is always allowed
