"""Partial fine-tuning: the top N encoder layers (plus the final norm) and the head train."""

from torch import nn

from lm_lab.finetune.base import Strategy
from lm_lab.finetune.targets import matches, submodule
from lm_lab.utils.errors import ConfigError


class Partial(Strategy):
    """Layers below the top `n_layers` stay frozen, as does the embedding. `patterns` (name
    substrings, wildcards allowed) unfreeze more, e.g. ["norm"] for every LayerNorm."""

    def __init__(
        self,
        n_layers: int = 1,
        patterns: list[str] | None = None,
        layers_path: str = "backbone.encoder.layers",
    ) -> None:
        self.n_layers, self.patterns, self.layers_path = n_layers, list(patterns or []), layers_path
        self.prefixes: tuple[str, ...] = ()

    def attach(self, module: nn.Module) -> None:
        layers = submodule(module, self.layers_path, "finetune.layers_path")
        if not 0 <= self.n_layers <= len(layers):
            raise ConfigError(
                f"finetune.n_layers={self.n_layers}: the encoder has {len(layers)} layers; "
                f"choose 0..{len(layers)}"
            )
        top = range(len(layers) - self.n_layers, len(layers))
        self.prefixes = tuple(f"{self.layers_path}.{i}." for i in top)
        if self.n_layers:
            self.prefixes += ("backbone.norm.",)  # the final norm sits on top of the top layer

    def trains(self, name: str) -> bool:
        return name.startswith(self.prefixes) or matches(name, self.patterns)
