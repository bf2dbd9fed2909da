"""Multi-head self-attention and the position-wise MLP: the two sublayers of a transformer block.

Every projection is an explicit `nn.Linear` (`q`, `k`, `v`, `o`; `fc`, `proj`), so fine-tuning
strategies (LoRA, IA3, adapters) can find and wrap each one by name.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm_lab.encoders.positions import Rotary, token_positions

KVCache = tuple[Tensor, Tensor]  # keys and values of every token seen so far, (B, H, S, Dh) each


def _linear(d_in: int, d_out: int, bias: bool) -> nn.Linear:
    """A Linear with nanoGPT's init (normal std 0.02, zero bias): early residuals stay small."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    nn.init.normal_(layer.weight, std=0.02)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def attention_mask(pad_mask: Tensor, causal: bool) -> Tensor:
    """Bool mask (B, 1, T, T), True where a query may attend: real keys, only past ones if causal.

    Each pad query may also attend to itself, so no row is fully masked (SDPA would return NaN);
    its output stays finite and never reaches a real position, because pad keys are masked.
    """
    T = pad_mask.shape[1]
    allowed = ~pad_mask[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        past = torch.ones(T, T, dtype=torch.bool, device=pad_mask.device).tril()
        allowed = allowed & past  # (B, 1, T, T)
    return allowed | torch.eye(T, dtype=torch.bool, device=pad_mask.device)  # (B, 1, T, T)


def cache_mask(offset: int, length: int, n_keys: int, n_pad: Tensor | None) -> Tensor | None:
    """Bool mask (B or 1, 1, t, S) for `length` queries at columns offset.. over S cached keys:
    past keys only, never a left-pad key (a pad query sees itself, as in `attention_mask`).
    None when SDPA needs no mask: one new token, or a first chunk that `is_causal` covers."""
    if n_pad is None and (length == 1 or offset == 0):
        return None
    device = None if n_pad is None else n_pad.device
    queries = offset + torch.arange(length, device=device)[:, None]  # (t, 1)
    keys = torch.arange(n_keys, device=device)[None, :]  # (1, S)
    allowed = keys <= queries  # (t, S)
    if n_pad is not None:
        real = keys >= n_pad[:, None, None]  # (B, 1, S)
        allowed = (allowed & real) | (keys == queries)  # (B, t, S)
    return allowed[:, None] if allowed.dim() == 3 else allowed  # (B, 1, t, S) or (t, S)


class SelfAttention(nn.Module):
    """Multi-head self-attention on `F.scaled_dot_product_attention`, optionally with rope."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        rope: Rotary | None = None,
    ) -> None:
        super().__init__()
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(
                f"model.d_model={d_model} must be divisible by model.n_heads={n_heads}"
            )
        if rope is not None and (d_model // n_heads) % 2:
            raise ValueError(
                f"positions=rope needs an even head size, but model.d_model={d_model} / "
                f"model.n_heads={n_heads} = {d_model // n_heads}"
            )
        self.n_heads, self.dropout, self.rope = n_heads, dropout, rope
        self.q = _linear(d_model, d_model, bias)
        self.k = _linear(d_model, d_model, bias)
        self.v = _linear(d_model, d_model, bias)
        self.o = _linear(d_model, d_model, bias)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        q, k, v = self._heads(x, offset=0)
        mask = None if pad_mask is None else attention_mask(pad_mask, causal)
        # is_causal is the fast path when the mask would hold causality alone
        return self._attend(q, k, v, mask, is_causal=causal and mask is None)

    def step(
        self, x: Tensor, cache: KVCache | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """Causal attention of x (B, t, D), the tokens at columns offset.., over the cached keys
        and values plus their own; returns the output and the grown cache."""
        t = x.shape[1]
        q, k, v = self._heads(x, token_positions(offset, t, n_pad))
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)  # (B, H, S, Dh)
        mask = cache_mask(offset, t, k.shape[2], n_pad)
        return self._attend(q, k, v, mask, is_causal=mask is None and t > 1), (k, v)

    def _heads(self, x: Tensor, offset: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v (B, H, T, Dh) of x (B, T, D), rotated for positions `offset` under rope."""
        B, T, _ = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, H, T, Dh)
            for proj in (self.q, self.k, self.v)
        )
        if self.rope is not None:
            q, k = self.rope(q, k, offset)
        return q, k, v

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        B, _, T, _ = q.shape
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, H, T, Dh)
        y = self.o(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)
        return self.resid_drop(y) if self.training else y  # a no-op call costs generation ~2%


class MLP(nn.Module):
    """Position-wise feed-forward: widen to d_ff, GELU, project back to d_model."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = _linear(d_model, d_ff, bias)
        self.proj = _linear(d_ff, d_model, bias)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc(x))  # (B, T, F)
        return self.drop(self.proj(h))  # (B, T, D)
