"""`init_from`: start a model from the backbone (embed + encoder + norm) of an lm_lab checkpoint.

The checkpoint's tokenizer comes along (token ids only mean something with it), and the run's
model config must describe the same architecture; dropout, gradient checkpointing and
`bidirectional` may differ (a causal LM has no backward LSTMs: a bidirectional classifier starts
them new).
"""

from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lm_lab.checkpoint import CheckpointMeta, read_checkpoint, read_meta
from lm_lab.data.tokenization.tokenizers import Tokenizer, from_json
from lm_lab.finetune.base import BACKBONE, group_of
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

# may differ between pretraining and fine-tuning (no weight depends on them)
FREE_KEYS = ("dropout", "bidirectional", "gradient_checkpointing")


def pretrained_tokenizer(cfg: DictConfig) -> Tokenizer | None:
    """The init_from checkpoint's fitted tokenizer (cfg.tokenizer is then ignored), else None."""
    if not cfg.get("init_from"):
        return None
    tokenizer = from_json(read_meta(cfg.init_from, key="init_from").tokenizer)
    log.info(f"init_from: using the checkpoint's tokenizer {tokenizer}")
    return tokenizer


def check_architecture(
    model_cfg: DictConfig,
    ckpt: dict[str, Any],
    path: str,
    key: str = "init_from",
    free: tuple[str, ...] = FREE_KEYS,
) -> None:
    """Every model key but `free` must equal the checkpoint's; the error names them all and
    `key`, the option that gave the path (ckpt_path= continues the very model: only dropout
    may differ there)."""
    saved = CheckpointMeta.from_checkpoint(ckpt).config.get("model", {})
    ours = OmegaConf.to_container(model_cfg, resolve=True)
    wrong = [
        f"model.{name}={ours.get(name)!r} (checkpoint: {value!r})"
        for name, value in saved.items()
        if name not in free and ours.get(name) != value
    ]
    if wrong:
        raise ConfigError(
            f"{key}={path}: the model differs from the checkpoint's: {', '.join(wrong)}; "
            "set these keys to the checkpoint's values"
        )


def load_backbone(
    module: nn.Module, path: str | Path, model_cfg: DictConfig, key: str = "init_from"
) -> set[str]:
    """Copies the checkpoint's backbone tensors into module.backbone; returns the loaded keys
    (module names, e.g. backbone.embed.weight) and prints what loaded and what is new.
    `key` names the option that gave `path`, for the error message."""
    ckpt = read_checkpoint(path, key)
    check_architecture(model_cfg, ckpt, str(path))
    theirs = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(BACKBONE)}
    ours = module.state_dict()
    unknown = sorted(set(theirs) - set(ours))
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}"
        for k, v in theirs.items()
        if k in ours and v.shape != ours[k].shape
    ]
    if unknown or shapes:
        raise ConfigError(
            f"init_from={path}: backbone mismatch; not in this model: {unknown[:5]}, "
            f"shape (checkpoint vs model): {shapes[:5]}; use the checkpoint's model config"
        )
    module.load_state_dict(theirs, strict=False)
    new = sorted(k for k in ours if k.startswith(BACKBONE) and k not in theirs)
    log.info(
        f"init_from={path}: loaded {len(theirs)} backbone tensors "
        f"({dict(Counter(group_of(k) for k in theirs))}); "
        f"new (random init): {_summary(new) or 'none'}"
    )
    return set(theirs)


def _summary(keys: Any) -> str:
    """backbone.encoder.layers.0.bwd.weight_ih_l0 -> 'encoder.layers.0.bwd' counted once."""
    counts = Counter(".".join(k.split(".")[1:-1]) or k for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in counts.items())
