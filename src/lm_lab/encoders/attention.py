"""Multi-head self-attention and the position-wise MLP: the two sublayers of a transformer block.

Every projection is an explicit `nn.Linear` (`q`, `k`, `v`, `o`; `fc`, `proj`), so fine-tuning
strategies (LoRA, IA3, adapters) can find and wrap each one by name.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm_lab.encoders.positions import Rotary


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
        B, T, D = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, H, T, Dh)
            for proj in (self.q, self.k, self.v)
        )
        if self.rope is not None:
            q, k = self.rope(q, k)
        mask = None if pad_mask is None else attention_mask(pad_mask, causal)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None,  # the fast path when the mask holds causality alone
        )  # (B, H, T, Dh)
        return self.resid_drop(self.o(y.transpose(1, 2).reshape(B, T, D)))  # (B, T, D)


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
