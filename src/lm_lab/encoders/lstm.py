"""An LSTM sublayer with residual + LayerNorm: bidirectional unless causal, blind to padding.

Two unidirectional `nn.LSTM`s (`fwd`, `bwd`) rather than one bidirectional one: a causal task
runs `fwd` alone, and the weights stay plain `weight_ih_l0` / `weight_hh_l0` parameters that a
LoRA can parametrize. `step` carries the forward LSTM's (h, c) across calls for generation.
"""

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LSTMState = tuple[Tensor, Tensor]  # (h, c) after the last real token, (1, B, D) each


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


def roll_rows(x: Tensor, shifts: Tensor) -> Tensor:
    """Roll row b of x (B, T, D) left by shifts[b]: left padding becomes right padding, and
    rolling by -shifts turns it back."""
    T = x.shape[1]
    index = (torch.arange(T, device=x.device)[None, :] + shifts[:, None]) % T  # (B, T)
    return x.gather(1, index[:, :, None].expand_as(x))  # (B, T, D)


def run_lstm(
    lstm: nn.LSTM, x: Tensor, lengths: Tensor | None, state: LSTMState | None = None
) -> tuple[Tensor, LSTMState]:
    """Run lstm over the first `lengths` steps of each sequence of x, from `state` (zeros when
    None); zeros at pad positions. Returns the outputs and the state after each last real step."""
    if lengths is None:
        return lstm(x, state)  # (B, T, D), ((1, B, D), (1, B, D))
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = lstm(packed, state)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], state


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
        y = run_lstm(self.fwd, h, lengths)[0]  # (B, T, D)
        if self.bwd is not None and not causal:
            backward = run_lstm(self.bwd, reverse_within(h, lengths), lengths)[0]
            y = y + reverse_within(backward, lengths)  # (B, T, D)
        return x + self.drop(y)

    def step(
        self, x: Tensor, state: LSTMState | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, LSTMState]:
        """Causal `forward` of the next tokens x (B, t, D), carrying (h, c) between calls.

        Left padding (n_pad, only in the first call) is rolled to the right and packed, so
        the state starts at each row's first real token and pad steps never update it.
        """
        h = self.ln(x)
        if state is None and n_pad is not None:
            lengths = (x.shape[1] - n_pad).clamp(min=1)  # (B,)
            y, state = run_lstm(self.fwd, roll_rows(h, n_pad), lengths)
            y = roll_rows(y, -n_pad)  # (B, t, D), zeros at pad columns
        else:
            y, state = self.fwd(h, state)  # (B, t, D)
        return x + self.drop(y), state

    @staticmethod
    def repeat_state(state: LSTMState, n: int) -> LSTMState:
        return tuple(
            t.expand(-1, n, -1).contiguous() for t in state
        )  # (1, n, D): cuDNN wants it dense
