"""Parameter-matched models: `model.param_budget` / `model.size` pick the width of any encoder.

A fair ablation compares encoders at the same parameter count, and the count depends on the
embedding (vocab x d_model), so sizing happens where the tokenizer is known: `build_module`
calls `sized_encoder_config` before instantiating. Counting is done by building the backbone on
the meta device (no memory, no init cost), so any encoder works without a per-class formula.
"""

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from lm_lab.encoders.backbone import Backbone
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

SIZES = {"tiny": 500_000, "small": 2_000_000, "base": 8_000_000}  # backbone params per preset
SIZING_KEYS = ("param_budget", "size")  # model keys read here, never passed to the encoder
TOLERANCE = 0.05  # a sized backbone is within 5% of its budget
MAX_D_MODEL = 8192  # search bound; a budget needing more is an error


def encoder_config(model_cfg: DictConfig) -> DictConfig:
    """cfg.model, resolved (it may point at task keys), without the sizing keys: what
    `instantiate` may receive."""
    resolved = OmegaConf.to_container(model_cfg, resolve=True)
    return OmegaConf.create({k: v for k, v in resolved.items() if k not in SIZING_KEYS})


def param_budget(model_cfg: DictConfig) -> int | None:
    """The target count: an explicit `param_budget` wins over a `size` preset; None = unsized."""
    budget, size = model_cfg.get("param_budget"), model_cfg.get("size")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
            raise ConfigError(f"model.param_budget={budget!r}: must be a positive number, e.g. 2e6")
        return int(budget)
    if size is None:
        return None
    if size not in SIZES:
        raise ConfigError(f"model.size={size!r}: unknown preset; use one of {', '.join(SIZES)}")
    return SIZES[size]


def count_backbone_params(model_cfg: DictConfig, vocab_size: int, pad_id: int) -> int:
    """Parameters of Backbone(encoder, vocab) built on the meta device (shapes only)."""
    with torch.device("meta"):
        backbone = Backbone(instantiate(model_cfg), vocab_size, pad_id)
    return sum(p.numel() for p in backbone.parameters())


def sized_encoder_config(model_cfg: DictConfig, vocab_size: int, pad_id: int) -> DictConfig:
    """The encoder config to instantiate: unchanged when no budget is set, else with d_model
    (a multiple of the width step, so heads divide it) set to the count closest to the budget,
    and d_ff nudged when the width step alone cannot land within TOLERANCE."""
    budget = param_budget(model_cfg)
    cfg = encoder_config(model_cfg)
    if budget is None:
        return cfg
    step = _width_step(cfg)
    units = _closest_units(cfg, step, budget, vocab_size, pad_id)
    _set(cfg, "d_model", units * step)
    count = count_backbone_params(cfg, vocab_size, pad_id)
    if abs(count - budget) > TOLERANCE * budget and "d_ff" in cfg:
        count = _fit_d_ff(cfg, budget, vocab_size, pad_id)
    if abs(count - budget) > TOLERANCE * budget:
        raise ConfigError(
            f"model.param_budget={budget}: the closest {cfg._target_.rsplit('.', 1)[-1]} has "
            f"{count} backbone parameters (d_model={cfg.d_model}, vocab {vocab_size}); "
            "change the budget, the number of layers or the vocabulary size"
        )
    log.info(
        f"model sized to {budget:,} params: d_model={cfg.d_model}"
        f"{f', d_ff={cfg.d_ff}' if cfg.get('d_ff') else ''} -> {count:,} backbone params "
        f"({100 * (count - budget) / budget:+.1f}%)"
    )
    return cfg


def _width_step(cfg: DictConfig) -> int:
    """d_model moves in steps that keep every head whole (and even-sized, which rope needs)."""
    n_heads = cfg.get("n_heads")
    return 2 * n_heads if n_heads else 2


def _closest_units(cfg: DictConfig, step: int, budget: int, vocab: int, pad: int) -> int:
    """Binary search for d_model = units * step, since the count grows with d_model."""

    def count(units: int) -> int:
        _set(cfg, "d_model", units * step)
        return count_backbone_params(cfg, vocab, pad)

    lo, hi = 1, MAX_D_MODEL // step
    if count(hi) < budget:
        raise ConfigError(f"model.param_budget={budget}: needs d_model > {MAX_D_MODEL}")
    while lo < hi:  # smallest units whose count reaches the budget
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid) < budget else (lo, mid)
    below = max(lo - 1, 1)
    return min((lo, below), key=lambda units: abs(count(units) - budget))


def _fit_d_ff(cfg: DictConfig, budget: int, vocab: int, pad: int) -> int:
    """The count is linear in d_ff: two counts give the d_ff that meets the budget."""
    base = cfg.get("d_ff") or 4 * cfg.d_model
    _set(cfg, "d_ff", base)
    at_base = count_backbone_params(cfg, vocab, pad)
    _set(cfg, "d_ff", base + 1)
    per_unit = count_backbone_params(cfg, vocab, pad) - at_base
    _set(cfg, "d_ff", max(1, base + round((budget - at_base) / per_unit)))
    return count_backbone_params(cfg, vocab, pad)


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    with open_dict(cfg):
        cfg[key] = value


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """What metrics.json reports: the backbone (what budgets match) and the whole module."""
    backbone = getattr(module, "backbone", module)
    return {
        "backbone": sum(p.numel() for p in backbone.parameters()),
        "total": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }
