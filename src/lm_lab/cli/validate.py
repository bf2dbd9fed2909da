"""Config values checked before anything is built, so a bad number fails in a second with the key
to change instead of after the data has loaded (or as a shape error deep in a forward pass)."""

from collections.abc import Callable
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm_lab.checkpoint import read_checkpoint
from lm_lab.utils.errors import ConfigError

_ABSENT = object()
LIGHTNING_CKPT_NAMES = ("last", "hpc", "best")  # ckpt_path values Lightning looks up itself


def _int_at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# key, test, what the value must be (said in the message)
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("model.d_model", _int_at_least(1), "an integer >= 1"),
    ("model.n_layers", _int_at_least(1), "an integer >= 1"),
    ("model.n_heads", _int_at_least(1), "an integer >= 1 that divides model.d_model"),
    ("model.dropout", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("task.optimizer.lr", lambda v: _number(v) and v > 0, "a number > 0, e.g. 1e-3"),
    ("task.optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("task.scheduler.warmup_steps", _int_at_least(0), "an integer >= 0"),
    ("task.scheduler.min_lr_ratio", lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("data.batch_size", _int_at_least(1), "an integer >= 1"),
    ("data.max_length", _int_at_least(1), "an integer >= 1"),
    ("data.block_size", _int_at_least(2), "an integer >= 2 (tokens per LM window)"),
    ("trainer.max_epochs", lambda v: v == -1 or _int_at_least(1)(v), "-1 or an integer >= 1"),
    ("trainer.max_steps", lambda v: v == -1 or _int_at_least(1)(v), "-1 or an integer >= 1"),
    ("trainer.accumulate_grad_batches", _int_at_least(1), "an integer >= 1"),
    (
        "trainer.gradient_clip_val",
        lambda v: v is None or (_number(v) and v > 0),
        "null or a number > 0",
    ),
]


def validate_config(cfg: DictConfig) -> None:
    """Raises ConfigError("<key>=<value>: must be ...") for the first value out of range; keys a
    config does not have (e.g. model.n_heads of the BiLSTM) are skipped. A ckpt_path to start
    from must be a readable lm_lab checkpoint."""
    check_model_shape()
    for key, ok, what in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not ok(value):
            raise ConfigError(f"{key}={value!r}: must be {what}")
    d_model, n_heads = cfg.model.get("d_model"), cfg.model.get("n_heads")
    if n_heads is not None and d_model % n_heads:
        nearest = max(n for n in range(1, n_heads + 1) if d_model % n == 0)
        raise ConfigError(
            f"model.n_heads={n_heads}: must divide model.d_model={d_model}; "
            f"use e.g. model.n_heads={nearest}"
        )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
        read_checkpoint(ckpt_path)


def check_model_shape() -> None:
    """An experiment that picks `shape=` must have a shape for the chosen encoder: Hydra's
    `optional` defaults entry would silently train the encoder's own default shape instead."""
    if not HydraConfig.initialized():
        return
    choices = HydraConfig.get().runtime.choices
    shape, model = choices.get("shape"), choices.get("model")
    if shape in (None, "none"):
        return
    options = GlobalHydra.instance().config_loader().get_group_options(f"model_shape/{shape}")
    if model not in options:
        raise ConfigError(
            f"shape={shape}: no conf/model_shape/{shape}/{model}.yaml for model={model}; "
            f"add that file or pick model= among {', '.join(options)}"
        )
