"""Multi-head self-attention and the position-wise MLP: the two sublayers of a transformer block.

Every projection is an explicit `nn.Linear` (`q`, `k`, `v`, `o`; `fc`, `proj`, and `up` for
SwiGLU), so fine-tuning strategies (LoRA, IA3, adapters) can find and wrap each one by name.
Keys and values may have fewer heads than queries (grouped-query attention, `n_kv_heads`).
Where nothing wraps q, k and v and no gradient reaches their weights (generation, evaluation,
a strategy that freezes them), one fused matmul computes all three (`SelfAttention._qkv`).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from lm_lab.encoders.packing import Packing
from lm_lab.encoders.positions import Rotary, token_positions

# Optimizer steps taken in this process. A fused AdamW step (lm_lab's default where the device
# has one) writes the weights without moving their version counters, so the fused q/k/v stack
# is keyed on this count as well: validation during training must see this step's weights.
_optimizer_steps = [0]


def _count_step(*_: object) -> None:
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_step)


class _Buffers:
    """Key and value storage (B, Hkv, capacity, Dh) each, shared by the caches that view it;
    `filled` is how many columns hold data, so only the cache that ends there may append in
    place (an older cache of the same buffer, e.g. a prefix continued twice, copies first)."""

    def __init__(self, k: Tensor, v: Tensor, filled: int) -> None:
        self.k, self.v, self.filled = k, v, filled


class KVCache:
    """Keys and values of every token seen so far: the first `length` columns of a buffer that
    grows by doubling, so a decoding step writes one column in place instead of copying the
    whole cache with `torch.cat` (quadratic in the number of generated tokens)."""

    MIN_CAPACITY = 16  # columns of the first allocation when the prompt is shorter

    def __init__(self, buffers: _Buffers, length: int) -> None:
        self.buffers, self.length = buffers, length

    @property
    def keys(self) -> Tensor:
        return self.buffers.k[:, :, : self.length]  # (B, Hkv, S, Dh)

    @property
    def values(self) -> Tensor:
        return self.buffers.v[:, :, : self.length]  # (B, Hkv, S, Dh)

    @classmethod
    def start(cls, k: Tensor, v: Tensor) -> "KVCache":
        """A cache holding k, v (B, Hkv, t, Dh) with room to grow."""
        return cls(_Buffers(k[:, :, :0], v[:, :, :0], 0), 0).append(k, v)

    def append(self, k: Tensor, v: Tensor) -> "KVCache":
        """The cache with k, v (B, Hkv, t, Dh) after its columns; this one stays valid."""
        end = self.length + k.shape[2]
        buffers = (
            self.buffers if self._writable(end) else self._grown(max(2 * end, self.MIN_CAPACITY))
        )
        buffers.k[:, :, self.length : end] = k
        buffers.v[:, :, self.length : end] = v
        buffers.filled = end
        return KVCache(buffers, end)

    def repeat(self, n: int) -> "KVCache":
        """The one-row cache for n rows: an expanded view, no copy, whose capacity is its length,
        so its first `append` copies it into an n-row buffer of its own."""
        k, v = (t.expand(n, -1, -1, -1) for t in (self.keys, self.values))  # (n, Hkv, S, Dh)
        return KVCache(_Buffers(k, v, self.length), self.length)

    def _writable(self, end: int) -> bool:
        """Whether columns length..end-1 may be written in place: room, no other cache's
        columns there, and not an inference tensor outside inference mode (a chat cache made by
        `generate_ids` and fed under `no_grad`)."""
        k = self.buffers.k
        inference_only = k.is_inference() and not torch.is_inference_mode_enabled()
        return self.buffers.filled == self.length and end <= k.shape[2] and not inference_only

    def _grown(self, capacity: int) -> _Buffers:
        """New buffers of `capacity` columns holding this cache's columns."""
        k, v = self.keys, self.values
        B, H, _, Dh = k.shape
        new_k = k.new_empty(B, H, capacity, Dh)  # (B, Hkv, capacity, Dh)
        new_v = v.new_empty(B, H, capacity, Dh)
        new_k[:, :, : self.length], new_v[:, :, : self.length] = k, v
        return _Buffers(new_k, new_v, self.length)


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
        n_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
    ) -> None:
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(
                f"model.d_model={d_model} must be divisible by model.n_heads={n_heads}"
            )
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"model.n_kv_heads={n_kv_heads} must divide model.n_heads={n_heads}")
        if rope is not None and (d_model // n_heads) % 2:
            raise ValueError(
                f"positions=rope needs an even head size, but model.d_model={d_model} / "
                f"model.n_heads={n_heads} = {d_model // n_heads}"
            )
        self.n_heads, self.n_kv_heads, self.dropout, self.rope = n_heads, n_kv_heads, dropout, rope
        d_kv = d_model // n_heads * n_kv_heads
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.q = _linear(d_model, d_model, qkv_bias)
        self.k = _linear(d_model, d_kv, qkv_bias)
        self.v = _linear(d_model, d_kv, qkv_bias)
        self.o = _linear(d_model, d_model, bias)
        self.resid_drop = nn.Dropout(dropout)
        self._fused: tuple[tuple, Tensor, Tensor | None] | None = None  # see `_fused_qkv`
        self.linear_kernel = F.linear  # the fused matmul; `prepare_for_decoding` may swap it

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        causal: bool = False,
        packing: Packing | None = None,
    ) -> Tensor:
        if packing is not None:  # packed rows: each sequence alone (causal, by LayerStack)
            q, k, v = self._heads(x, packing.positions)
            return self._attend(q, k, v, packing.mask, is_causal=False)
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
        cache = KVCache.start(k, v) if cache is None else cache.append(k, v)
        k, v = cache.keys, cache.values  # (B, Hkv, S, Dh)
        mask = cache_mask(offset, t, k.shape[2], n_pad)
        return self._attend(q, k, v, mask, is_causal=mask is None and t > 1), cache

    def _heads(self, x: Tensor, offset: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, H, T, Dh) and k, v (B, Hkv, T, Dh) of x (B, T, D), rotated for positions
        `offset` under rope."""
        B, T, _ = x.shape
        q, k, v = (
            y.view(B, T, heads, -1).transpose(1, 2)  # (B, heads, T, Dh)
            for y, heads in zip(
                self._qkv(x), (self.n_heads, self.n_kv_heads, self.n_kv_heads), strict=True
            )
        )
        if self.rope is not None:
            q, k = self.rope(q, k, offset)
        return q, k, v

    def _qkv(self, x: Tensor) -> tuple[Tensor, ...]:
        """q (B, T, D) and k, v (B, T, Dkv) of x: one matmul when `_fused_qkv` allows."""
        fused = self._fused_qkv()
        if fused is None:
            return self.q(x), self.k(x), self.v(x)
        weight, bias = fused
        sizes = [self.q.out_features, self.k.out_features, self.v.out_features]
        return self.linear_kernel(x, weight, bias).split(sizes, -1)  # (B, T, D + 2 Dkv) split

    def _fused_qkv(self) -> tuple[Tensor, Tensor | None] | None:
        """The q, k, v weights (D + 2 Dkv, D) and biases stacked, or None where the three
        projections must run as modules: a strategy wraps one (parametrization, hook) or a
        gradient must reach their weights. The stack is a cache, rebuilt when any weight is
        replaced or written in place (its version counter moves: state dict, `copy_`) and after
        every optimizer step (fused AdamW leaves the counters as they were)."""
        projs = (self.q, self.k, self.v)
        if any(type(p) is not nn.Linear or p._forward_hooks or p._forward_pre_hooks for p in projs):
            return None  # parametrize subclasses the Linear: LoRA, IA3
        tensors = [t for p in projs for t in (p.weight, p.bias) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return None
        key = (_optimizer_steps[0], *((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors))
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad(), torch.inference_mode(False):  # usable outside inference too
                # (D + 2 Dkv, D), stored (D, D + 2 Dkv): the layout decoding reads fastest
                weight = torch.cat([p.weight.t() for p in projs], dim=1).t()
                bias = None if self.q.bias is None else torch.cat([p.bias for p in projs])
            self._fused = (key, weight, bias)
        return self._fused[1], self._fused[2]

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
            enable_gqa=self.n_kv_heads != self.n_heads,  # each kv head serves H / Hkv queries
        )  # (B, H, T, Dh)
        y = self.o(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)
        return self.resid_drop(y) if self.training else y  # a no-op call costs generation ~2%


MLPS = ("gelu", "gelu_tanh", "swiglu")


class MLP(nn.Module):
    """Position-wise feed-forward: widen to d_ff, activate, project back to d_model.

    `kind`: gelu (exact), gelu_tanh (GPT-2's approximation) or swiglu (Llama: silu(fc(x)) gates
    a second projection `up`; three matrices instead of two).
    """

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True, kind: str = "gelu"
    ) -> None:
        super().__init__()
        if kind not in MLPS:
            raise ValueError(f"model.mlp={kind!r} must be one of {', '.join(MLPS)}")
        self.fc = _linear(d_model, d_ff, bias)
        self.up = _linear(d_model, d_ff, bias) if kind == "swiglu" else None
        self.proj = _linear(d_ff, d_model, bias)
        self.act = (
            nn.SiLU() if kind == "swiglu" else nn.GELU("tanh" if kind == "gelu_tanh" else "none")
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc(x))  # (B, T, F)
        if self.up is not None:
            h = h * self.up(x)  # (B, T, F)
        return self.drop(self.proj(h))  # (B, T, D)
