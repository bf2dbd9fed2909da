"""LSTM layers and attention blocks interleaved by a pattern string, e.g. "LA" or "LLAL"."""

from torch import nn

from lm_lab.encoders.base import LayerStack
from lm_lab.encoders.lstm import LSTMLayer
from lm_lab.encoders.positions import build_positions
from lm_lab.encoders.transformer import TransformerBlock, mlp_width

LAYER_KINDS = {"L": "LSTM layer", "A": "attention + MLP block"}


class HybridEncoder(LayerStack):
    """One layer per pattern letter: `L` an `LSTMLayer`, `A` a `TransformerBlock`.

    Positions default to none because the LSTM layers already carry order; any other kind is
    added at the input (rope goes into every attention block).
    """

    def __init__(
        self,
        d_model: int = 128,
        pattern: str = "LA",
        n_heads: int = 4,
        d_ff: int | None = None,
        dropout: float = 0.0,
        positions: str = "none",
        max_len: int = 512,
        bidirectional: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        if not pattern or set(pattern) - LAYER_KINDS.keys():
            kinds = ", ".join(f"{letter} = {kind}" for letter, kind in LAYER_KINDS.items())
            raise ValueError(f"model.pattern={pattern!r} must be a non-empty string of {kinds}")
        self.d_model = d_model
        self.max_len = max_len if positions == "learned" else None
        self.pos, rope = build_positions(positions, d_model, max_len)
        self.layers = nn.ModuleList(
            LSTMLayer(d_model, dropout, bidirectional)
            if letter == "L"
            else TransformerBlock(d_model, n_heads, mlp_width(d_ff, d_model), dropout, rope=rope)
            for letter in pattern
        )
