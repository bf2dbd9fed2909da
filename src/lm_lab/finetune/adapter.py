"""Bottleneck adapters (Houlsby et al., 2019) after chosen sublayers, added by forward hooks.

The hook replaces a sublayer's output y by y + up(gelu(down(y))); `up` starts at zero, so the
model is unchanged at init. Targets are module class names: `SelfAttention` and `MLP` (before the
block's residual add, as in Houlsby) and `LSTMLayer` (after its residual). Generation calls a
sublayer's `step` method, which no forward hook sees, so a target with one gets it wrapped too.
"""

from types import MethodType
from typing import Any

from torch import Tensor, nn

from lm_lab.finetune.base import Strategy
from lm_lab.finetune.targets import modules_of_type, submodule


class Bottleneck(nn.Module):
    """d -> size -> d with a residual; `up` zero-initialised."""

    def __init__(self, d_model: int, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, size)
        self.act = nn.GELU()
        self.up = nn.Linear(size, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: Tensor) -> Tensor:
        return y + self.up(self.act(self.down(y)))  # (B, T, D)


def _adapter_hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
    return module.adapter(output)


def _adapted_step(module: nn.Module, *args: Any, **kwargs: Any) -> tuple[Tensor, Any]:
    """The class's `step` (generation), its output through the adapter as `forward`'s is."""
    y, state = type(module).step(module, *args, **kwargs)  # (B, t, D), the layer's state
    return module.adapter(y), state


class Adapter(Strategy):
    """One `Bottleneck` (as `<sublayer>.adapter`) per module of a `targets` type; they and the
    head train. Every target's output width is the encoder's `d_model`."""

    def __init__(
        self,
        size: int = 16,
        targets: list[str] | None = None,
        encoder_path: str = "backbone.encoder",
    ) -> None:
        self.size, self.encoder_path = size, encoder_path
        self.targets = list(targets or ["SelfAttention", "MLP", "LSTMLayer"])

    def attach(self, module: nn.Module) -> None:
        d_model = submodule(module, self.encoder_path, "finetune.encoder_path").d_model
        for target in modules_of_type(module, self.targets, "finetune.targets"):
            target.adapter = Bottleneck(d_model, self.size)
            target.register_forward_hook(_adapter_hook)
            if hasattr(target, "step"):  # bound to the instance: a deepcopy rebinds it
                target.step = MethodType(_adapted_step, target)
