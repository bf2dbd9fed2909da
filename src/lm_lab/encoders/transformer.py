"""A pre-norm Transformer encoder: attention masks the future when causal, padding when given."""

from torch import Tensor, nn

from lm_lab.encoders.attention import MLP, KVCache, SelfAttention
from lm_lab.encoders.base import LayerStack
from lm_lab.encoders.positions import Rotary, build_positions


class TransformerBlock(nn.Module):
    """Pre-norm block, x + attn(ln1(x)) then x + mlp(ln2(x)): it trains stably at any depth.
    d_ff=0 builds no MLP (attention-only, as the recall probes of Zoology use)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        bias: bool = True,
        rope: Rotary | None = None,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = SelfAttention(d_model, n_heads, dropout, bias, rope)
        self.ln2 = nn.LayerNorm(d_model, bias=bias) if d_ff else None
        self.mlp = MLP(d_model, d_ff, dropout, bias) if d_ff else None

    def forward(self, x: Tensor, pad_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln1(x), pad_mask, causal)  # (B, T, D)
        if self.mlp is None:
            return x
        return x + self.mlp(self.ln2(x))  # (B, T, D)

    def step(
        self, x: Tensor, cache: KVCache | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """`forward` for the next tokens of a causal sequence, attending through the KV cache."""
        y, cache = self.attn.step(self.ln1(x), cache, offset, n_pad)
        x = x + y  # (B, t, D)
        if self.mlp is None:
            return x, cache
        return x + self.mlp(self.ln2(x)), cache  # (B, t, D)


def mlp_width(d_ff: int | None, d_model: int) -> int:
    """null means the usual 4 * d_model; 0 means no MLP at all."""
    if d_ff is not None and d_ff < 0:
        raise ValueError(f"model.d_ff={d_ff}: must be >= 0 (0 = no MLP) or null (4 * d_model)")
    return 4 * d_model if d_ff is None else d_ff


class TransformerEncoder(LayerStack):
    """A stack of pre-norm blocks; positions are added at the input or, for rope, in attention."""

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        d_ff: int | None = None,
        dropout: float = 0.0,
        positions: str = "sinusoidal",
        max_len: int = 512,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len if positions == "learned" else None
        self.pos, rope = build_positions(positions, d_model, max_len)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_width(d_ff, d_model), dropout, bias, rope)
            for _ in range(n_layers)
        )
