"""Parallel convolutions of several widths (Kim, 2014): each position sees the n-grams around it.

Under max pooling this is a learned bag of n-grams, the neural counterpart of n-gram TF-IDF
features: few parameters, fast on a CPU, and strong on small labelled sets, where attention and
recurrence have too little data to learn from.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm_lab.encoders.base import LayerStack, State


class ConvBlock(nn.Module):
    """Convolutions of widths `kernel_sizes` side by side, merged back to d_model, inside a
    residual + LayerNorm. Pad positions are zeroed first, so they read like the sequence end."""

    def __init__(self, d_model: int, kernel_sizes: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, k) for k in kernel_sizes)
        self.proj = nn.Linear(d_model * len(kernel_sizes), d_model)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pad_mask: Tensor | None, causal: bool) -> Tensor:
        h = x if pad_mask is None else x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        h = h.transpose(1, 2)  # (B, D, T)
        grams = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            left = k - 1 if causal else (k - 1) // 2  # causal: window ends at the position
            grams.append(conv(F.pad(h, (left, k - 1 - left))))  # (B, D, T)
        h = torch.cat(grams, dim=1).transpose(1, 2)  # (B, T, D * n_widths)
        return self.norm(x + self.drop(self.proj(F.gelu(h))))  # (B, T, D)


class CNNEncoder(LayerStack):
    """`n_layers` ConvBlocks; unbounded length and no positions: order lives in the windows."""

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 1,
        kernel_sizes: tuple[int, ...] = (1, 2, 3, 4, 5),
        dropout: float = 0.1,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        if not kernel_sizes or min(kernel_sizes) < 1:
            raise ValueError(f"model.kernel_sizes={list(kernel_sizes)}: give widths >= 1")
        self.d_model, self.max_len, self.pos = d_model, None, None  # no positions: n-grams
        self.incremental = False
        self.layers = nn.ModuleList(
            ConvBlock(d_model, tuple(kernel_sizes), dropout) for _ in range(n_layers)
        )

    def forward_step(
        self, x: Tensor, state: State | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, State]:
        raise ValueError("model=cnn encodes whole sequences: generate with transformer|bilstm")
