"""Hugging Face folder -> lm_lab: the model config, the tokenizer and the weights.

Weights stream tensor by tensor from the safetensors files (memory-mapped by `safe_open`,
opened per tensor so that no mapping outlives its tensor) into the backbone's own parameters:
the rise of memory during a load is the model itself plus one tensor.
"""

import os
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from torch import nn

from lm_lab.data.tokenizers import PretrainedTokenizer
from lm_lab.hf.families import Rule, model_config, rules
from lm_lab.hf.folder import read_config, resolve, weight_files
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

CONTEXT_CAP = 2048  # block size assumed for probes of a model that was never trained here


class Pretrained:
    """A resolved folder with its config.json and the lm_lab `model.*` keys it maps to."""

    def __init__(self, source: str | Path, key: str = "init_from") -> None:
        self.source, self.key = str(source), key
        self.folder = resolve(source, key)
        self.hf = read_config(self.folder)
        try:
            self.model = model_config(self.hf)
        except ConfigError as err:
            raise ConfigError(f"{key}={source}: {err}") from None
        self.vocab_size = int(self.hf["vocab_size"])

    def tokenizer(self) -> PretrainedTokenizer:
        tokenizer = PretrainedTokenizer(self.folder)
        if tokenizer.vocab_size != self.vocab_size:
            raise ConfigError(
                f"{self.key}={self.source}: tokenizer vocab_size {tokenizer.vocab_size} != "
                f"embedding rows {self.vocab_size}"
            )
        return tokenizer

    def load_into(self, backbone: nn.Module) -> set[str]:
        """Copies every tensor of the folder into `backbone` (its params may sit on the meta
        device: they are then allocated here, in their dtype); returns the loaded module keys
        (`backbone.<name>`)."""
        if any(p.is_meta for p in backbone.parameters()):
            backbone.to_empty(device="cpu")
        state = backbone.state_dict()
        files = weight_files(self.folder, self.key)
        loaded: set[str] = set()
        with torch.no_grad():
            for rule in rules(self.hf, self.model):
                if rule.lm[0] not in state:  # lm_head of a model built for classification
                    continue
                for name, part in zip(rule.lm, rule.split(self._read(rule, files)), strict=True):
                    self._copy(state[name], part, name)
                    loaded.add(name)
        missing = sorted(set(state) - loaded)
        if missing:
            raise ConfigError(f"{self.key}={self.source}: no weights for {missing[:5]}")
        log.info(
            f"{self.key}={self.source}: loaded {len(loaded)} tensors of a "
            f"{self.hf['model_type']} model into lm_lab's TransformerEncoder"
        )
        return {f"backbone.{name}" for name in loaded}

    def _read(self, rule: Rule, files: dict[str, Path]) -> torch.Tensor:
        name = rule.hf if rule.hf in files else rule.hf.split(".", 1)[1]  # base-model saves
        if name not in files:
            raise ConfigError(f"{self.key}={self.source}: tensor {rule.hf} is missing")
        with safe_open(files[name], framework="pt") as f:
            return f.get_tensor(name)

    def _copy(self, param: torch.Tensor, value: torch.Tensor, name: str) -> None:
        if param.shape != value.shape:
            raise ConfigError(
                f"{self.key}={self.source}: {name} has shape {tuple(value.shape)} in the folder, "
                f"{tuple(param.shape)} in the model"
            )
        param.copy_(value)

    def run_config(self, task: DictConfig) -> DictConfig:
        """What a checkpoint would hold: enough for eval.py and generate.py (no data)."""
        context = min(int(self.model["max_len"]), CONTEXT_CAP)
        return OmegaConf.create(
            {
                "model": self.model,
                "task": task,
                "init_from": self.source,
                "data": {"block_size": context},
            }
        )


def task_config(name: str) -> DictConfig:
    """The project's conf/task/<name>.yaml, composed by Hydra (it has defaults), inside a
    running Hydra app (generate.py, eval.py) or on its own."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=f"task/{name}").task
    root = Path(os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[3])
    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        return compose(config_name=f"task/{name}").task


def load_language_model(
    source: str | Path, key: str = "ckpt_path", dtype: torch.dtype | None = None
) -> tuple[Any, DictConfig]:
    """A LanguageModel (eval mode) holding the folder's weights, and its run config; `dtype`
    (e.g. torch.bfloat16) allocates the parameters in that type, so no fp32 copy ever exists."""
    from hydra.utils import instantiate

    from lm_lab.encoders.backbone import Backbone

    pretrained = Pretrained(source, key)
    tokenizer = pretrained.tokenizer()
    cfg = pretrained.run_config(task_config("generate"))
    with torch.device("meta"):
        encoder = instantiate(cfg.model)
        backbone = Backbone(encoder, tokenizer.vocab_size, tokenizer.pad_id)
        if dtype is not None:
            backbone.to(dtype)
    pretrained.load_into(backbone)
    module = instantiate(cfg.task, backbone=backbone, tokenizer=tokenizer, label_names=None)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    return module.eval(), cfg
