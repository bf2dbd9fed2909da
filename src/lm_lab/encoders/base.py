"""The Encoder contract: what every sequence encoder guarantees, so encoders swap freely."""

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lm_lab.encoders.packing import Packing
from lm_lab.encoders.positions import token_positions

State = list[Any]  # one entry per layer: a KV cache (attention) or an (h, c) pair (LSTM)


class Encoder(nn.Module, ABC):
    """Maps hidden states (B, T, D) to (B, T, D), with the same `d_model` in and out.

    Every implementation guarantees:
    - `causal=True` never looks ahead: the output at position t depends only on inputs at <= t.
    - padding never changes outputs at real positions. `pad_mask` is a (B, T) bool tensor, True AT
      PADDING, with batches right-padded; outputs at pad positions are finite but meaningless.

    `max_len` is the longest sequence the encoder accepts, or None when it is unbounded.

    `segments` (B, T) long, given only to an encoder that says `packable`, packs several
    sequences in a row (`packing.Packing`): with `causal=True` each token sees only the earlier
    tokens of its own run of equal ids, and positions restart at each run, so every sequence is
    encoded as if it were alone.

    `forward_step` encodes a causal sequence a chunk at a time for generation, carrying a
    per-layer state instead of recomputing the past; it equals `forward(..., causal=True)`.
    """

    d_model: int
    max_len: int | None
    incremental: bool = True  # has a working `forward_step` (generation, prefix-cached scoring)
    packable: bool = False  # honours `segments` (packed sequences); attention-only stacks do

    def final_norm(self) -> nn.Module:
        """The norm the Backbone applies to the encoder's output; encoders with a choice of norm
        (TransformerEncoder's `norm`) override it."""
        return nn.LayerNorm(self.d_model)

    @abstractmethod
    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        causal: bool = False,
        segments: Tensor | None = None,
    ) -> Tensor:
        """Encode x (B, T, D) into (B, T, D) under the guarantees above."""

    @abstractmethod
    def forward_step(
        self, x: Tensor, state: State | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Causal encoding of x (B, t, D), the tokens at columns offset .. offset + t - 1 of a
        sequence whose earlier columns are summed up in `state` (None at the start).

        `n_pad` (B,) counts left-pad columns per row in a batch of prompts of unequal length:
        only the first call may contain them; each row's positions start at its first real
        token and pad columns never reach a real one. Returns (y (B, t, D), new state).
        """


class LayerStack(Encoder):
    """An encoder made of an optional input encoding `pos` (added to x, None for none) and
    `layers`, each with `forward(x, pad_mask, causal)` and `step(x, state, offset, n_pad)`:
    the Transformer, BiLSTM and hybrid encoders differ only in what they stack.

    `gradient_checkpointing` (`model.gradient_checkpointing`) trades compute for memory: while
    training with gradients on, each layer keeps only its input and recomputes its activations
    in backward; eval, generation and `forward_step` never recompute."""

    pos: nn.Module | None
    layers: nn.ModuleList
    gradient_checkpointing: bool = False

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        causal: bool = False,
        segments: Tensor | None = None,
    ) -> Tensor:
        packed = () if segments is None else (self._packing(segments, causal),)
        if self.pos is not None:
            x = self.pos(x, *(p.positions for p in packed))  # (B, T, D)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:  # RNG state is replayed, so dropout masks match the first pass
                x = checkpoint(layer, x, pad_mask, causal, *packed, use_reentrant=False)
            else:
                x = layer(x, pad_mask, causal, *packed)  # (B, T, D)
        return x

    def _packing(self, segments: Tensor, causal: bool) -> Packing:
        """Layers of a `packable` stack take the Packing as a 4th argument."""
        if not (self.packable and causal):
            raise ValueError(
                f"{type(self).__name__}: packed sequences (data.packing=true) need a causal "
                "attention-only encoder; use model=transformer or data.packing=false"
            )
        return Packing.of(segments)

    def forward_step(
        self, x: Tensor, state: State | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, State]:
        if self.pos is not None:
            x = self.pos(x, token_positions(offset, x.shape[1], n_pad))  # (B, t, D)
        new_state = []
        for layer, layer_state in zip(self.layers, state or [None] * len(self.layers), strict=True):
            x, layer_state = layer.step(x, layer_state, offset, n_pad)  # (B, t, D)
            new_state.append(layer_state)
        return x, new_state

    def repeat_state(self, state: State, n: int) -> State:
        """A one-row state (after a shared prompt prefix) for a batch of n rows that continue
        it: each layer expands its own tensors along their batch dimension, without a copy."""
        return [layer.repeat_state(s, n) for layer, s in zip(self.layers, state, strict=True)]
