"""Reading lm_lab checkpoints: a Lightning checkpoint plus config, tokenizer and label names."""

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lm_lab.data.tokenizers import from_json
from lm_lab.encoders.backbone import Backbone
from lm_lab.finetune.base import apply_finetune
from lm_lab.tasks.base import TaskModule
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.sizing import sized_encoder_config


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint on the CPU and checks it carries lm_lab's own state."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file; pass a <run dir>/checkpoints/*.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files fail in many ways
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({err})") from err
    if "lm_lab" not in ckpt or "state_dict" not in ckpt:
        raise ConfigError(f"ckpt_path={path}: not an lm_lab checkpoint (no config/tokenizer in it)")
    return ckpt


def build_module(cfg: DictConfig, tokenizer: Any, label_names: list[str] | None) -> TaskModule:
    """Encoder from cfg.model (sized to model.param_budget / model.size when set), wrapped in a
    Backbone sized by the tokenizer, under cfg.task."""
    vocab, pad = tokenizer.vocab_size, tokenizer.pad_id
    encoder = instantiate(sized_encoder_config(cfg.model, vocab, pad))
    backbone = Backbone(encoder, vocab, pad, lm_head=cfg.task.get("name") == "generate")
    return instantiate(cfg.task, backbone=backbone, tokenizer=tokenizer, label_names=label_names)


def load_module(path: str | Path, base_ckpt: str | None = None) -> tuple[TaskModule, DictConfig]:
    """Rebuilds the trained module from the checkpoint alone (no run dir, no data needed), or
    from an adapter-only artefact plus its base LM checkpoint (`base_ckpt`); a Hugging Face
    folder (or Hub id) gives a language model with its weights."""
    from lm_lab.hf.folder import is_hf_source  # lazy: hf builds on this module's layers

    if is_hf_source(path):
        from lm_lab.hf.load import load_language_model

        return load_language_model(path)
    ckpt = read_checkpoint(path)
    state = ckpt["lm_lab"]
    cfg = OmegaConf.create(state["config"])
    module = build_module(cfg, from_json(state["tokenizer"]), state["label_names"])
    if state.get("adapter_only"):
        from lm_lab.finetune.setup import restore_adapter  # lazy: finetune reads checkpoints too

        base = base_ckpt or cfg.get("init_from")
        transferred = None
        if is_hf_source(base):  # fine-tuned from a Hugging Face folder
            from lm_lab.hf.load import Pretrained

            key = "base_ckpt" if base_ckpt else "init_from"
            transferred = Pretrained(base, key).load_into(module.backbone)
        restore_adapter(module, cfg, ckpt, base_ckpt, transferred)
    else:
        apply_finetune(cfg, module)  # LoRA keys, adapters, prompts must exist before loading
        module.load_state_dict(ckpt["state_dict"])
    module.run_config = state["config"]
    return module.eval(), cfg
