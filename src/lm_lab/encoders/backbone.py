"""Token embedding -> encoder -> final norm: the part of a model that transfers between tasks.

The output projection onto the vocabulary is the embedding, transposed, unless the encoder says
`tie_embeddings=False` (Llama, GPT-NeoX): then `lm_head` holds its own matrix, built only for the
tasks that predict tokens (`lm_head=True`).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm_lab.encoders.base import Encoder, State


class Backbone(nn.Module):
    """Turns token ids into contextual states (B, T, D) that any task head can read.

    The pad token's embedding starts at zero and the lookup gives it no gradient
    (`padding_idx`); but a language model's head is tied to this table, and its pad logit does
    train that row, so pad inputs are not zero after LM training. What keeps padding away from
    real positions is the encoder's pad_mask, never the pad row's value.
    """

    def __init__(
        self,
        encoder: Encoder,
        vocab_size: int,
        pad_id: int,
        emb_dropout: float = 0.0,
        lm_head: bool = True,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, encoder.d_model, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.drop = nn.Dropout(emb_dropout)
        self.encoder = encoder
        self.norm = encoder.final_norm()
        untied = lm_head and not getattr(encoder, "tie_embeddings", True)
        self.lm_head = nn.Linear(encoder.d_model, vocab_size, bias=False) if untied else None
        self.linear_kernel = F.linear  # the head's matmul; `prepare_for_decoding` may swap it

    @property
    def d_model(self) -> int:
        return self.encoder.d_model

    def logits(self, h: Tensor) -> Tensor:
        """Scores (..., V) of states h (..., D) over the vocabulary."""
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight  # (V, D)
        return self.linear_kernel(h, weight)

    def forward(
        self,
        input_ids: Tensor,
        pad_mask: Tensor | None = None,
        causal: bool = False,
        segments: Tensor | None = None,
    ) -> Tensor:
        """`segments` (B, T): packed sequences (see `Encoder`); only passed on when given, so
        encoders and hooks that predate packing see the call they always did."""
        x = self.drop(self.embed(input_ids))  # (B, T, D)
        packed = {} if segments is None else {"segments": segments}
        return self.norm(self.encoder(x, pad_mask, causal, **packed))  # (B, T, D)

    def step(
        self, input_ids: Tensor, state: State | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """`forward(..., causal=True)` for the next tokens only; see `Encoder.forward_step`."""
        x = self.embed(input_ids)  # (B, t, D)
        if self.training:  # skipped in eval: a no-op module call costs generation ~1%
            x = self.drop(x)
        y, state = self.encoder.forward_step(x, state, offset, n_pad)
        return self.norm(y), state  # (B, t, D)
