"""IA3 (Liu et al., 2022): learned vectors that rescale keys, values and the MLP hidden units.

Each vector scales one weight: the output rows of `attn.k`, `attn.v` (and of an LSTM's
`weight_ih`, i.e. its four gate pre-activations) or the input columns of `mlp.proj` (the MLP
hidden units). Written as a parametrization, it merges into the weight exactly.
"""

import torch
from torch import Tensor, nn

from lm_lab.finetune.base import Reparam, Strategy, attach_reparam
from lm_lab.finetune.targets import weight_targets
from lm_lab.utils.errors import ConfigError


class IA3Scale(Reparam):
    """W -> diag(l) W (rows) or W diag(l) (columns); l starts at ones: no change at init."""

    def __init__(self, weight: Tensor, dim: int) -> None:
        super().__init__()
        self.dim = dim  # 0 scales outputs (rows), 1 inputs (columns)
        self.ia3_scale = nn.Parameter(torch.ones(weight.shape[dim]))

    def _shaped(self) -> Tensor:
        return self.ia3_scale[:, None] if self.dim == 0 else self.ia3_scale[None, :]

    def update(self, weight: Tensor) -> Tensor:
        return weight * self._shaped()

    def revert(self, weight: Tensor) -> Tensor:
        return weight / self._shaped()


class IA3(Strategy):
    """Scaling vectors on `scale_outputs` (rows) and `scale_inputs` (columns); head trains too.
    On a bias-carrying Linear the bias is left unscaled (l * Wx + b)."""

    def __init__(
        self, scale_outputs: list[str] | None = None, scale_inputs: list[str] | None = None
    ) -> None:
        self.scale_outputs = list(scale_outputs or [])
        self.scale_inputs = list(scale_inputs or [])

    def attach(self, module: nn.Module) -> None:
        """A transformer has no LSTM weights and a BiLSTM no attention: each list may match
        nothing in a given encoder, but together they must match something."""
        found = [
            (dim, owner, weight)
            for dim, patterns in ((0, self.scale_outputs), (1, self.scale_inputs))
            for _, owner, weight in weight_targets(module, patterns, "", required=False)
        ]
        if not found:
            raise ConfigError(
                f"finetune.scale_outputs={self.scale_outputs}, finetune.scale_inputs="
                f"{self.scale_inputs}: match no Linear or LSTM weight in the model"
            )
        for dim, owner, weight in found:
            attach_reparam(owner, weight, IA3Scale(getattr(owner, weight), dim))
