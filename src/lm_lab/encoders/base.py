"""The Encoder contract: what every sequence encoder guarantees, so encoders swap freely."""

from abc import ABC, abstractmethod

from torch import Tensor, nn


class Encoder(nn.Module, ABC):
    """Maps hidden states (B, T, D) to (B, T, D), with the same `d_model` in and out.

    Every implementation guarantees:
    - `causal=True` never looks ahead: the output at position t depends only on inputs at <= t.
    - padding never changes outputs at real positions. `pad_mask` is a (B, T) bool tensor, True AT
      PADDING, with batches right-padded; outputs at pad positions are finite but meaningless.

    `max_len` is the longest sequence the encoder accepts, or None when it is unbounded.
    """

    d_model: int
    max_len: int | None

    @abstractmethod
    def forward(self, x: Tensor, pad_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """Encode x (B, T, D) into (B, T, D) under the guarantees above."""
