"""What every fine-tuning strategy shares: freeze, attach, report, merge, and the small artefact.

A strategy acts on any `nn.Module` by parameter and module names, never by task: parameters under
`backbone.` are the pretrained part; everything else (a classifier's `head`) is the task's own,
new, and always trains. Parameters a strategy adds carry one of `ADDED_MARKERS` in their name.
"""

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils import parametrize

BACKBONE = "backbone."
ADDED_MARKERS = ("lora_", "ia3_", "adapter.", "soft_prompt")
GROUPS = ("embed", "encoder", "norm", "head", "added")


def is_added(name: str) -> bool:
    return any(marker in name for marker in ADDED_MARKERS)


def group_of(name: str) -> str:
    """embed | encoder | norm (the backbone's parts) | head (the task's own) | added."""
    if is_added(name):
        return "added"
    if not name.startswith(BACKBONE):
        return "head"
    part = name[len(BACKBONE) :].split(".")[0]
    return part if part in ("embed", "norm") else "encoder"


def base_name(name: str) -> str:
    """The key a weight had before `torch.nn.utils.parametrize` moved it under
    `parametrizations.<w>.original`, so frozen pretrained weights keep one name."""
    return name.replace("parametrizations.", "").replace(".original", "")


class Strategy:
    """Freezes everything, lets the subclass attach new parameters, then unfreezes what
    `trains(name)` selects. The task's own parameters and added ones always train."""

    def apply(self, module: nn.Module) -> nn.Module:
        """Mutates `module` in place (and returns it)."""
        self.attach(module)
        for name, param in module.named_parameters():
            param.requires_grad = (
                not name.startswith(BACKBONE) or is_added(name) or self.trains(name)
            )
        return module

    def attach(self, module: nn.Module) -> None:
        """Add parameters, hooks or parametrizations; the default adds nothing."""

    def trains(self, name: str) -> bool:
        """Whether a pretrained (backbone) parameter trains; the default freezes them all."""
        return False

    def merge(self, module: nn.Module) -> None:
        """Fold added parameters into the frozen weights (same outputs, no extra compute)."""
        for reparam, original in _reparams(module):
            reparam.merge(original)

    def unmerge(self, module: nn.Module) -> None:
        """Undo `merge`, so training can go on."""
        for reparam, original in _reparams(module):
            reparam.unmerge(original)


def trainable_report(module: nn.Module) -> dict[str, Any]:
    """Trainable and total parameter counts per group and overall, with the trainable %."""
    rows = {group: {"trainable": 0, "total": 0} for group in GROUPS}
    for name, param in module.named_parameters():
        row = rows[group_of(name)]
        row["total"] += param.numel()
        row["trainable"] += param.numel() if param.requires_grad else 0
    rows["all"] = {key: sum(rows[g][key] for g in GROUPS) for key in ("trainable", "total")}
    for row in rows.values():
        row["percent"] = round(100 * row["trainable"] / max(1, row["total"]), 3)
    return rows


def adapter_state(module: nn.Module, transferred: set[str]) -> dict[str, Tensor]:
    """The state a base checkpoint cannot give back: everything but the frozen parameters that
    were loaded from it (new frozen ones, e.g. a backward LSTM the causal LM lacked, are kept)."""
    frozen = {
        name
        for name, param in module.named_parameters()
        if not param.requires_grad and base_name(name) in transferred
    }
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def build_strategy(cfg: DictConfig) -> Strategy | None:
    """The run's strategy from cfg.finetune, or None for configs that predate fine-tuning."""
    return instantiate(cfg.finetune) if cfg.get("finetune") else None


def apply_finetune(cfg: DictConfig, module: nn.Module) -> Strategy | None:
    """Re-applies a saved run's strategy so its state dict (LoRA keys, adapters) loads."""
    strategy = build_strategy(cfg)
    if strategy is not None:
        strategy.apply(module)
    return strategy


class Reparam(nn.Module):
    """A `torch.nn.utils.parametrize` parametrization that can be merged into its weight.

    `merged` is a buffer, so a checkpoint says whether its `original` already holds the update.
    Subclasses define `update(W)` and its inverse `revert(W)`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("merged", torch.zeros((), dtype=torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        return weight if self.merged else self.update(weight)

    def update(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def revert(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self, original: Tensor) -> None:
        if not self.merged:
            original.copy_(self.update(original))
            self.merged.fill_(True)

    @torch.no_grad()
    def unmerge(self, original: Tensor) -> None:
        if self.merged:
            original.copy_(self.revert(original))
            self.merged.fill_(False)


def attach_reparam(owner: nn.Module, weight: str, reparam: Reparam) -> None:
    """`owner.<weight>` becomes reparam(original); the original keeps its requires_grad."""
    parametrize.register_parametrization(owner, weight, reparam, unsafe=True)


def _reparams(module: nn.Module) -> list[tuple[Reparam, Tensor]]:
    """Every Reparam with the original weight it parametrizes."""
    found = []
    for owner in module.modules():
        for plist in getattr(owner, "parametrizations", {}).values():
            found += [(r, plist.original) for r in plist if isinstance(r, Reparam)]
    return found
