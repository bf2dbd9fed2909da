"""Positional encodings, chosen by name: `sinusoidal | learned | rope | none`.

Sinusoidal and learned encodings are added to the encoder input; rope rotates q and k inside
attention, so it is a `Rotary` handed to each attention layer; none leaves order to the model
(an LSTM carries it). Every encoding takes `offset`, the position of the first token, so that
KV-cache generation can encode new tokens where they really sit; `offset` may also be a (B, T)
tensor of per-token positions, for left-padded batches whose rows start at different columns.
"""

import math
from typing import Any

import torch
from torch import Tensor, nn

POSITIONS = ("sinusoidal", "learned", "rope", "none")
Offset = int | Tensor  # the first token's position, or every token's position (B, T)


def token_positions(offset: int, length: int, n_pad: Tensor | None) -> Offset:
    """Positions of `length` tokens appended at column `offset` of a left-padded batch: row b
    starts counting at its first real token (column n_pad[b]); pad columns sit at 0."""
    if n_pad is None:
        return offset
    columns = offset + torch.arange(length, device=n_pad.device)  # (T,)
    return (columns[None, :] - n_pad[:, None]).clamp(min=0)  # (B, T)


def _end(offset: Offset, length: int) -> int:
    """One past the last position used."""
    return offset + length if isinstance(offset, int) else int(offset.max()) + 1


def _rows(table: Tensor, offset: Offset, length: int) -> Tensor:
    """Table rows for the positions: (T, C) from an int offset, (B, T, C) from a (B, T) tensor."""
    return table[offset : offset + length] if isinstance(offset, int) else table[offset]


def inverse_frequencies(dim: int, base: float, device: torch.device | None = None) -> Tensor:
    """1 / base^(2i / dim), fp32, as transformers (and llama.cpp's converter) round it: base^-x
    differs by one ulp in 11 of SmolLM2's 32 frequencies, which put 1.1e-4 between the two
    libraries' fp32 logits (0 this way)."""
    return 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def _angles(
    n_positions: int, dim: int, base: float, device: torch.device, scaling: dict | None = None
) -> Tensor:
    """Angles pos / base^(2i / dim), the frequencies shared by sinusoidal encodings and rope;
    `scaling` (rope only) stretches the low frequencies to reach longer contexts."""
    inv_freq = inverse_frequencies(dim, base, device)  # (ceil(dim / 2),)
    if scaling is not None:
        inv_freq = llama3_frequencies(inv_freq, **scaling)
    positions = torch.arange(n_positions, device=device, dtype=torch.float32)
    return torch.outer(positions, inv_freq)  # (L, ceil(dim / 2))


ROPE_SCALINGS = ("llama3",)


def llama3_frequencies(
    inv_freq: Tensor,
    type: str,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
) -> Tensor:
    """Llama 3.1's rope scaling: wavelengths longer than the pretraining context / low_freq_factor
    slow down by `factor`, those under context / high_freq_factor stay, the band between blends."""
    if type not in ROPE_SCALINGS:
        raise ValueError(f"model.rope_scaling.type={type!r} must be one of {ROPE_SCALINGS}")
    context = original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    slowed = torch.where(wavelen > context / low_freq_factor, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * slowed / factor + smooth * slowed
    band = (wavelen >= context / high_freq_factor) & (wavelen <= context / low_freq_factor)
    return torch.where(band, blended, slowed)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos encodings (Vaswani et al.): no parameters and no length limit.

    Scaled to the token embeddings' init (std `init_std` per dimension): at full amplitude
    (RMS 0.7 against 0.02) the positions drown token identity and a classifier barely learns.
    """

    def __init__(self, d_model: int, base: float = 10000.0, init_std: float = 0.02) -> None:
        super().__init__()
        self.d_model, self.base = d_model, base
        self.scale = init_std * 2**0.5  # sin/cos have RMS 1/sqrt(2)
        # A cache, not state (no buffer: DDP would broadcast it, and its length differs between
        # ranks); rebuilt (doubled) whenever a longer sequence or another device arrives.
        self.table = torch.empty(0, d_model)

    def forward(self, x: Tensor, offset: Offset = 0) -> Tensor:
        end = _end(offset, x.shape[1])
        if end > self.table.shape[0] or self.table.device != x.device:
            angles = _angles(2 * end, self.d_model, self.base, x.device)
            self.table = torch.cat([angles.sin(), angles.cos()], -1)[:, : self.d_model]  # (L, D)
        return x + self.scale * _rows(self.table, offset, x.shape[1]).to(x.dtype)  # (B, T, D)


class LearnedPositions(nn.Module):
    """One trained vector per position; the only encoding with a hard length limit."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: Tensor, offset: Offset = 0) -> Tensor:
        end = _end(offset, x.shape[1])
        if end > self.max_len:
            raise ValueError(
                f"sequence reaches position {end} but model.max_len={self.max_len} with "
                "positions=learned; raise model.max_len or use positions=sinusoidal|rope"
            )
        return x + _rows(self.embed.weight, offset, x.shape[1])  # (B, T, D)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x[i], x[i + Dh/2]) of x (B, H, T, Dh) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin  # (B, H, T, Dh)


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer): q.k then depends only on the distance t - s.

    Holds no parameters, so one instance is shared by every attention layer of an encoder; the
    cos/sin tables follow the head size of the q it is given and grow as sequences get longer.
    `fraction` < 1 rotates only the first dims of each head (GPT-NeoX's partial rotary).
    """

    def __init__(
        self, base: float = 10000.0, fraction: float = 1.0, scaling: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"model.rotary_fraction={fraction} must be in (0, 1]")
        self.base, self.fraction, self.scaling = base, fraction, scaling
        # caches, not buffers: DDP would broadcast them, and their length differs between ranks
        self.cos, self.sin = torch.empty(0, 0), torch.empty(0, 0)

    def forward(self, q: Tensor, k: Tensor, offset: Offset = 0) -> tuple[Tensor, Tensor]:
        """Rotate q and k (B, H, T, Dh) whose first token sits at position `offset`."""
        T, dim = q.shape[-2], int(q.shape[-1] * self.fraction)
        end = _end(offset, T)
        if end > self.cos.shape[0] or dim != self.cos.shape[1] or self.cos.device != q.device:
            angles = _angles(2 * end, dim, self.base, q.device, self.scaling).repeat(1, 2)
            self.cos, self.sin = angles.cos(), angles.sin()  # (L, R) for the R rotated dims
        cos, sin = (_rows(table, offset, T).to(q.dtype) for table in (self.cos, self.sin))
        if cos.dim() == 3:  # per-row positions (B, T, R) broadcast over heads
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, R)
        if dim == q.shape[-1]:
            return _rotate(q, cos, sin), _rotate(k, cos, sin)
        return tuple(  # rotate the first R dims, pass the rest through
            torch.cat([_rotate(x[..., :dim], cos, sin), x[..., dim:]], -1) for x in (q, k)
        )


def build_positions(
    kind: str, d_model: int, max_len: int, **rope: Any
) -> tuple[SinusoidalPositions | LearnedPositions | None, Rotary | None]:
    """Split `positions=<kind>` into the encoding added at the input and a Rotary for attention
    (built with the `rope` settings: base, fraction, scaling)."""
    if kind not in POSITIONS:
        raise ValueError(f"model.positions={kind!r} must be one of {', '.join(POSITIONS)}")
    if kind == "sinusoidal":
        return SinusoidalPositions(d_model), None
    if kind == "learned":
        return LearnedPositions(d_model, max_len), None
    return None, Rotary(**rope) if kind == "rope" else None
