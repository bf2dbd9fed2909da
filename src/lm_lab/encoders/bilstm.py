"""A stack of residual LSTM layers: order comes from recurrence, so it needs no positions."""

from torch import nn

from lm_lab.encoders.base import LayerStack
from lm_lab.encoders.lstm import LSTMLayer


class BiLSTMEncoder(LayerStack):
    """Stacked `LSTMLayer`s; bidirectional unless called causal or built bidirectional=False."""

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 2,
        dropout: float = 0.1,
        bidirectional: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.d_model = d_model
        self.max_len = None
        self.pos = None  # order comes from the recurrence
        self.layers = nn.ModuleList(
            LSTMLayer(d_model, dropout, bidirectional) for _ in range(n_layers)
        )
