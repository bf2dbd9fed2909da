"""Assembly: a task module from a config and a tokenizer, or back from a checkpoint.

Sits above tasks/, finetune/ and sizing, which it ties together; nothing below imports it."""

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lm_lab.checkpoint import CheckpointMeta, read_checkpoint
from lm_lab.data.tokenizers import from_json
from lm_lab.encoders.backbone import Backbone
from lm_lab.finetune.base import apply_finetune
from lm_lab.finetune.setup import restore_adapter
from lm_lab.sizing import sized_encoder_config
from lm_lab.tasks.base import TaskModule


def build_module(cfg: DictConfig, tokenizer: Any, label_names: list[str] | None) -> TaskModule:
    """Encoder from cfg.model (sized to model.param_budget / model.size when set), wrapped in a
    Backbone sized by the tokenizer, under cfg.task."""
    vocab, pad = tokenizer.vocab_size, tokenizer.pad_id
    backbone = Backbone(instantiate(sized_encoder_config(cfg.model, vocab, pad)), vocab, pad)
    return instantiate(cfg.task, backbone=backbone, tokenizer=tokenizer, label_names=label_names)


def load_module(path: str | Path, base_ckpt: str | None = None) -> tuple[TaskModule, DictConfig]:
    """Rebuilds the trained module from the checkpoint alone (no run dir, no data needed), or
    from an adapter-only artefact plus its base LM checkpoint (`base_ckpt`)."""
    ckpt = read_checkpoint(path)
    meta = CheckpointMeta.from_checkpoint(ckpt)
    cfg = OmegaConf.create(meta.config)
    module = build_module(cfg, from_json(meta.tokenizer), meta.label_names)
    if meta.adapter_only:
        restore_adapter(module, cfg, ckpt, meta.base_keys, base_ckpt)
    else:
        apply_finetune(cfg, module)  # LoRA keys, adapters, prompts must exist before loading
        module.load_state_dict(ckpt["state_dict"])
    module.run_config = meta.config
    return module.eval(), cfg
