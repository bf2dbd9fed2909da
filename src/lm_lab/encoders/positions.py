"""Positional encodings, chosen by name: `sinusoidal | learned | rope | none`.

Sinusoidal and learned encodings are added to the encoder input; rope rotates q and k inside
attention, so it is a `Rotary` handed to each attention layer; none leaves order to the model
(an LSTM carries it). Every encoding takes `offset`, the position of the first token, so that
KV-cache generation can encode new tokens where they really sit; `offset` may also be a (B, T)
tensor of per-token positions, for left-padded batches whose rows start at different columns.
"""

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


def _angles(n_positions: int, dim: int, base: float, device: torch.device) -> Tensor:
    """Angles pos / base^(2i / dim), the frequencies shared by sinusoidal encodings and rope."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    positions = torch.arange(n_positions, device=device, dtype=torch.float32)
    return torch.outer(positions, inv_freq)  # (L, ceil(dim / 2))


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
    """

    def __init__(self, base: float = 10000.0) -> None:
        super().__init__()
        self.base = base
        # caches, not buffers: DDP would broadcast them, and their length differs between ranks
        self.cos, self.sin = torch.empty(0, 0), torch.empty(0, 0)

    def forward(self, q: Tensor, k: Tensor, offset: Offset = 0) -> tuple[Tensor, Tensor]:
        """Rotate q and k (B, H, T, Dh) whose first token sits at position `offset`."""
        T, head_dim = q.shape[-2], q.shape[-1]
        end = _end(offset, T)
        if end > self.cos.shape[0] or head_dim != self.cos.shape[1] or self.cos.device != q.device:
            angles = _angles(2 * end, head_dim, self.base, q.device).repeat(1, 2)  # (L, Dh)
            self.cos, self.sin = angles.cos(), angles.sin()
        cos, sin = (_rows(table, offset, T).to(q.dtype) for table in (self.cos, self.sin))
        if cos.dim() == 3:  # per-row positions (B, T, Dh) broadcast over heads
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, Dh)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def build_positions(
    kind: str, d_model: int, max_len: int
) -> tuple[SinusoidalPositions | LearnedPositions | None, Rotary | None]:
    """Split `positions=<kind>` into the encoding added at the input and a Rotary for attention."""
    if kind not in POSITIONS:
        raise ValueError(f"model.positions={kind!r} must be one of {', '.join(POSITIONS)}")
    if kind == "sinusoidal":
        return SinusoidalPositions(d_model), None
    if kind == "learned":
        return LearnedPositions(d_model, max_len), None
    return None, Rotary() if kind == "rope" else None
