"""A pre-norm Transformer encoder: attention masks the future when causal, padding when given.

Its options cover the pretrained families lm_lab loads (`lm_lab.hf`): LayerNorm or RMSNorm,
GELU or SwiGLU MLPs, grouped-query attention, rope base / scaling / partial rotary, q/k/v
biases, GPT-NeoX's parallel residual and an untied output head. The defaults are lm_lab's own
model as it always was.
"""

from typing import Any

from torch import Tensor, nn

from lm_lab.encoders.attention import MLP, KVCache, SelfAttention
from lm_lab.encoders.base import LayerStack
from lm_lab.encoders.packing import Packing
from lm_lab.encoders.positions import Rotary, build_positions

NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, d_model: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """LayerNorm (optionally without bias) or RMSNorm (Llama: scale only, no centring)."""
    if kind not in NORMS:
        raise ValueError(f"model.norm={kind!r} must be one of {', '.join(NORMS)}")
    if kind == "rmsnorm":
        return nn.RMSNorm(d_model, eps=eps)
    return nn.LayerNorm(d_model, eps=eps, bias=bias)


class TransformerBlock(nn.Module):
    """Pre-norm block, x + attn(ln1(x)) then x + mlp(ln2(x)): it trains stably at any depth.
    `parallel_residual` (GPT-NeoX) adds both to the same input: x + attn(ln1(x)) + mlp(ln2(x)).
    d_ff=0 builds no MLP (attention-only, as the recall probes of Zoology use)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        bias: bool = True,
        rope: Rotary | None = None,
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        mlp: str = "gelu",
        n_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
        parallel_residual: bool = False,
    ) -> None:
        super().__init__()
        self.parallel = parallel_residual
        self.ln1 = make_norm(norm, d_model, norm_eps, bias)
        self.attn = SelfAttention(d_model, n_heads, dropout, bias, rope, n_kv_heads, qkv_bias)
        self.ln2 = make_norm(norm, d_model, norm_eps, bias) if d_ff else None
        self.mlp = MLP(d_model, d_ff, dropout, bias, mlp) if d_ff else None

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        causal: bool = False,
        packing: Packing | None = None,
    ) -> Tensor:
        return self._mlp(x, self.attn(self.ln1(x), pad_mask, causal, packing))  # (B, T, D)

    def step(
        self, x: Tensor, cache: KVCache | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """`forward` for the next tokens of a causal sequence, attending through the KV cache."""
        y, cache = self.attn.step(self.ln1(x), cache, offset, n_pad)
        return self._mlp(x, y), cache  # (B, t, D)

    @staticmethod
    def repeat_state(cache: KVCache, n: int) -> KVCache:
        return cache.repeat(n)  # (n, Hkv, S, Dh) keys and values

    def _mlp(self, x: Tensor, attended: Tensor) -> Tensor:
        """The residual sum of the block's input x and its attention output (B, T, D) each."""
        if self.mlp is None:
            return x + attended
        if self.parallel:
            return x + attended + self.mlp(self.ln2(x))
        x = x + attended
        return x + self.mlp(self.ln2(x))  # (B, T, D)


def mlp_width(d_ff: int | None, d_model: int) -> int:
    """null means the usual 4 * d_model; 0 means no MLP at all."""
    if d_ff is not None and d_ff < 0:
        raise ValueError(f"model.d_ff={d_ff}: must be >= 0 (0 = no MLP) or null (4 * d_model)")
    return 4 * d_model if d_ff is None else d_ff


class TransformerEncoder(LayerStack):
    """A stack of pre-norm blocks; positions are added at the input or, for rope, in attention.

    `tie_embeddings=False` tells the Backbone to give language modelling its own output matrix;
    `final_norm()` is the norm the Backbone puts after the last block. Packable: packed
    sequences get their own positions and a block-diagonal mask (`packing.Packing`).
    """

    packable = True

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
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        mlp: str = "gelu",
        n_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
        parallel_residual: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        rotary_fraction: float = 1.0,
        tie_embeddings: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.d_model = d_model
        self.max_len = max_len if positions == "learned" else None
        self.norm_kind, self.norm_eps = norm, norm_eps
        self.tie_embeddings = tie_embeddings
        self.pos, rope = build_positions(
            positions,
            d_model,
            max_len,
            base=rope_theta,
            fraction=rotary_fraction,
            scaling=dict(rope_scaling) if rope_scaling else None,
        )
        block = dict(norm=norm, norm_eps=norm_eps, mlp=mlp, n_kv_heads=n_kv_heads)
        block |= dict(qkv_bias=qkv_bias, parallel_residual=parallel_residual)
        self.layers = nn.ModuleList(
            TransformerBlock(
                d_model, n_heads, mlp_width(d_ff, d_model), dropout, bias, rope, **block
            )
            for _ in range(n_layers)
        )

    def final_norm(self) -> nn.Module:
        return make_norm(self.norm_kind, self.d_model, self.norm_eps)
