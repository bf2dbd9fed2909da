"""BitFit (Ben Zaken et al., 2022): only the bias terms of the backbone train, plus the head."""

from lm_lab.finetune.base import Strategy


class BitFit(Strategy):
    """Linear and LayerNorm `bias`, LSTM `bias_ih_l*` / `bias_hh_l*`: any name ending `.bias*`."""

    def trains(self, name: str) -> bool:
        return name.rsplit(".", 1)[-1].startswith("bias")
