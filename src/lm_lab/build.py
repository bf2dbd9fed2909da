"""Assembly: a task module from a config and a tokenizer, or back from a checkpoint.

Sits above tasks/, finetune/ and sizing, which it ties together; nothing below imports it.
Imports no Lightning itself: it loads with the first task class Hydra instantiates, so
`load_module` has read and checked the checkpoint (one line on a bad one) before it."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from lm_lab.checkpoint import CheckpointMeta, load_plain, read_checkpoint, read_meta
from lm_lab.data.tokenization.tokenizers import from_json
from lm_lab.encoders.backbone import Backbone
from lm_lab.finetune.base import apply_finetune
from lm_lab.finetune.setup import restore_adapter
from lm_lab.hf.folder import is_hf_source
from lm_lab.hf.load import Pretrained, load_language_model
from lm_lab.sizing import sized_encoder_config
from lm_lab.tasks.metrics import LANGUAGE_MODELS
from lm_lab.tasks.pooling import POOLINGS
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

if TYPE_CHECKING:  # a LightningModule: imported for the annotations only
    from lm_lab.tasks.base import TaskModule

log = get_logger(__name__)


def build_module(cfg: DictConfig, tokenizer: Any, label_names: list[str] | None) -> "TaskModule":
    """Encoder from cfg.model (sized to model.param_budget / model.size when set), wrapped in a
    Backbone sized by the tokenizer, under cfg.task (its null causal/pooling resolved first,
    in place, so the saved run config holds what was built)."""
    members = _members(cfg)  # a classifier's ensemble: one freshly initialised backbone each
    resolve_attention(cfg)
    vocab, pad = tokenizer.vocab_size, tokenizer.pad_id

    def backbone() -> Backbone:
        encoder = instantiate(sized_encoder_config(cfg.model, vocab, pad))
        return Backbone(encoder, vocab, pad, lm_head=cfg.task.get("name") in LANGUAGE_MODELS)

    more = {"more_backbones": nn.ModuleList(backbone() for _ in range(members - 1))}
    return instantiate(
        cfg.task,
        backbone=backbone(),
        tokenizer=tokenizer,
        label_names=label_names,
        **(more if members > 1 else {}),
    )


def resolve_attention(cfg: DictConfig) -> None:
    """`task.causal: null` / `task.pooling: null` (conf/task/classify.yaml) become the setting the
    weights were trained for: causal attention (forward-only LSTMs) for an init_from that was
    trained causally, bidirectional otherwise; pooling `last` (the one state that has read the
    whole text) when causal, `mean` otherwise. A value the user set is kept. The one place these
    defaults are decided; logs one line when it decides one."""
    task = cfg.task
    unset = [key for key in ("causal", "pooling") if key in task and task[key] is None]
    if not unset:
        return
    init_from = cfg.get("init_from")
    causal = trained_causally(init_from) if task.causal is None else bool(task.causal)
    with open_dict(task):
        task.causal = causal
        if "pooling" in task and task.pooling is None:
            task.pooling = "last" if causal else "mean"
    log.info(
        f"task.causal={str(causal).lower()}, task.pooling={task.get('pooling')} "
        f"({_why(init_from, causal, 'causal' in unset)}; causal pools the last real token by "
        f"default); change with task.causal=true|false, task.pooling={'|'.join(POOLINGS)}"
    )


def _why(init_from: str | None, causal: bool, chosen: bool) -> str:
    """What decided task.causal, for resolve_attention's log line."""
    if not chosen:
        return "task.causal as set"
    if not init_from:
        return "no init_from: trained from scratch"
    return f"init_from={init_from} was trained {'causally' if causal else 'bidirectionally'}"


def trained_causally(init_from: str | None) -> bool:
    """Whether the init_from weights learnt to never look ahead: every Hugging Face folder, GGUF
    file or named model lm_lab loads is a causal LM; an lm_lab checkpoint says so in its own
    config (task=generate: causal true)."""
    if not init_from:
        return False
    if is_hf_source(init_from):
        return True
    return bool(read_meta(init_from, key="init_from").config.get("task", {}).get("causal"))


def _members(cfg: DictConfig) -> int:
    """task.members; more than one trains K models from scratch side by side, so it cannot
    start from a pretrained backbone or freeze part of one."""
    members = cfg.task.get("members", 1)
    if members > 1 and (cfg.get("init_from") or not str(cfg.finetune._target_).endswith(".Full")):
        raise ConfigError(
            f"task.members={members} trains {members} models from scratch side by side: "
            "use it with finetune=full and without init_from, or set task.members=1"
        )
    return members


def load_module(
    path: str | Path,
    base_ckpt: str | None = None,
    dtype: torch.dtype | None = None,
    key: str = "ckpt_path",
) -> tuple["TaskModule", DictConfig]:
    """Rebuilds the trained module from the checkpoint alone (no run dir, no data needed), or
    from an adapter-only artefact plus its base LM checkpoint (`base_ckpt`); a Hugging Face
    folder (or Hub id) gives a language model with its weights, loaded straight into `dtype`
    (checkpoints are converted after loading). Errors name `key`, the option that gave `path`."""
    if is_hf_source(path):
        return load_language_model(path, key, dtype=dtype)
    ckpt = read_checkpoint(path, key)
    meta = CheckpointMeta.from_checkpoint(ckpt)
    cfg = OmegaConf.create(meta.config)
    module = build_module(cfg, from_json(meta.tokenizer), meta.label_names)
    if meta.adapter_only:
        base = base_ckpt or cfg.get("init_from")
        transferred = None
        if is_hf_source(base):  # fine-tuned from a Hugging Face folder
            key = "base_ckpt" if base_ckpt else "init_from"
            transferred = Pretrained(base, key).load_into(module.backbone)
        restore_adapter(module, cfg, ckpt, meta.base_keys, base_ckpt, transferred)
    else:
        apply_finetune(cfg, module)  # LoRA keys, adapters, prompts must exist before loading
        module.load_state_dict(ckpt["state_dict"])
    module.run_config = meta.config
    return module.eval().to(dtype), cfg


def load_task(path: str | Path, task: type["TaskModule"], map_location: Any = None) -> "TaskModule":
    """What `Classifier.load_from_checkpoint(path)` is in other Lightning projects, on best.ckpt /
    last.ckpt: the module rebuilt by `load_module`, refused unless it is a `task`, so a caller
    expecting a classifier never gets a language model. Adapter-only files (adapter.pt) need
    `load_module` and their base checkpoint."""
    if read_meta(path).adapter_only:
        raise ConfigError(
            f"{path}: an adapter-only file; load it with "
            "lm_lab.build.load_module(path, base_ckpt=<the LM checkpoint it was tuned from>)"
        )
    module, _ = load_module(path)
    if not isinstance(module, task):
        raise ConfigError(
            f"{path}: a {type(module).__name__} checkpoint, not a {task.__name__}; "
            f"use load_task(path, {type(module).__name__})"
        )
    return module.to(map_location) if map_location is not None else module


def check_weights_fit(module: nn.Module, path: str | Path, key: str = "ckpt_path") -> None:
    """The checkpoint's weights have the keys and shapes of `module`'s (memory-mapped: nothing
    is read but the header). validate_config compares the model keys; what else shapes the
    weights (the tokenizer's vocabulary, task.ngram_bag, task.members, the finetune strategy) is
    compared here, before Lightning loads them, so a mismatch is one line instead of
    load_state_dict's page of sizes."""
    theirs = load_plain(path, f"{key}={path}", mmap=True)["state_dict"]
    ours = module.state_dict()
    wrong = [
        f"{k}: {_shape(theirs.get(k))} in the checkpoint, {_shape(ours.get(k))} here"
        for k in sorted(set(ours) | set(theirs))
        if _shape(ours.get(k)) != _shape(theirs.get(k))
    ]
    if wrong:
        raise ConfigError(
            f"{key}={path}: its weights do not fit the model this config builds "
            f"({'; '.join(wrong[:3])}); continue it with its own data, tokenizer, task and "
            f"finetune settings, or start a new model from its backbone with init_from={path}"
        )


def _shape(tensor: torch.Tensor | None) -> str:
    return "absent" if tensor is None else str(tuple(tensor.shape))
