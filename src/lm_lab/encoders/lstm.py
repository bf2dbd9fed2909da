"""An LSTM sublayer with residual + LayerNorm: bidirectional unless causal, blind to padding.

Two unidirectional `nn.LSTM`s (`fwd`, `bwd`) rather than one bidirectional one: a causal task
runs `fwd` alone, and the weights stay plain `weight_ih_l0` / `weight_hh_l0` parameters that a
LoRA can parametrize.
"""

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def reverse_within(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (B, T, D) within its real length, right padding left in place.

    Applying it twice gives x back, so the backward LSTM reads real tokens only, last one first.
    """
    if lengths is None:
        return x.flip(1)  # (B, T, D)
    t = torch.arange(x.shape[1], device=x.device)  # (T,)
    n = lengths.to(x.device)[:, None]  # (B, 1)
    index = torch.where(t < n, n - 1 - t, t)  # (B, T)
    return x.gather(1, index[:, :, None].expand_as(x))  # (B, T, D)


def run_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None) -> Tensor:
    """Run lstm over the first `lengths` steps of each sequence of x; zeros at pad positions."""
    if lengths is None:
        return lstm(x)[0]  # (B, T, D)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])
    return out[0]  # (B, T, D)


class LSTMLayer(nn.Module):
    """Pre-norm residual LSTM, x + drop(fwd(ln(x)) + bwd(ln(x))); bwd is skipped when causal.

    Expects right-padded batches: at pad positions the LSTM adds nothing, so the output there is
    the residual input.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, bidirectional: bool = True) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.fwd = nn.LSTM(d_model, d_model, batch_first=True)
        self.bwd = nn.LSTM(d_model, d_model, batch_first=True) if bidirectional else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        # A fully padded row still runs one step: packing rejects empty sequences.
        lengths = None if pad_mask is None else (~pad_mask).sum(1).clamp(min=1)  # (B,)
        h = self.ln(x)
        y = run_lstm(self.fwd, h, lengths)  # (B, T, D)
        if self.bwd is not None and not causal:
            backward = run_lstm(self.bwd, reverse_within(h, lengths), lengths)
            y = y + reverse_within(backward, lengths)  # (B, T, D)
        return x + self.drop(y)
