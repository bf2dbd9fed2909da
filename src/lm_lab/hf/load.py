"""Hugging Face folder -> lm_lab: the model config, the tokenizer and the weights.

Weights stream tensor by tensor from the safetensors files (memory-mapped by `safe_open`,
opened per tensor so that no mapping outlives its tensor) into the backbone's own parameters:
the rise of memory during a load is the model itself plus one tensor.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from torch import nn

from lm_lab.data.tokenization.tokenizers import PretrainedTokenizer
from lm_lab.hf.families import Rule, model_config, rules
from lm_lab.hf.folder import read_config, read_json, resolve, weight_files
from lm_lab.hf.registry import project_conf
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

CONTEXT_CAP = 2048  # block size assumed for probes of a model that was never trained here
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SPECIAL_IDS = ("eos", "bos", "pad")  # ids the tokenizer takes from the folder's JSON files


class Pretrained:
    """A resolved folder with its config.json and the lm_lab `model.*` keys it maps to."""

    def __init__(self, source: str | Path, key: str = "init_from") -> None:
        self.source, self.key = str(source), key
        self.folder = resolve(source, key)
        with self.named():
            self.hf = read_config(self.folder)
            self.model = model_config(self.hf)
            self.files = weight_files(self.folder)  # every header read: bad files fail now
        self.vocab_size = int(self.hf["vocab_size"])

    @contextmanager
    def named(self) -> Iterator[None]:
        """Prefixes the folder's one-line errors with the option that named it."""
        try:
            yield
        except ConfigError as err:
            raise ConfigError(f"{self.key}={self.source}: {err}") from None

    def tokenizer(self) -> PretrainedTokenizer:
        """The folder's tokenizer, refused when its ids do not fit the embedding."""
        try:
            tokenizer = PretrainedTokenizer(self.folder)
        except ConfigError:
            raise
        except Exception as err:  # the tokenizers library's own parse errors
            with self.named():
                self._name_bad_tokenizer_file(err)
        if tokenizer.vocab_size != self.vocab_size:
            raise ConfigError(
                f"{self.key}={self.source}: tokenizer vocab_size {tokenizer.vocab_size} != "
                f"embedding rows {self.vocab_size}"
            )
        for name in SPECIAL_IDS:
            token_id = tokenizer.state()[f"{name}_id"]
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise ConfigError(
                    f"{self.key}={self.source}: {name}_token_id={token_id} lies outside the "
                    f"vocabulary (config.json vocab_size={self.vocab_size}); set it to the id "
                    f"of the model's {name} token"
                )
        return tokenizer

    def _name_bad_tokenizer_file(self, err: Exception) -> NoReturn:
        """Raises a one-line error naming the tokenizer file that fails to parse (the JSON
        ones are checked in turn; only on this failure path, so a good load parses once)."""
        for name in TOKENIZER_FILES:
            if (self.folder / name).is_file():
                read_json(self.folder / name)
        raise ConfigError(f"tokenizer.json is not a tokenizer the tokenizers library reads ({err})")

    def load_into(self, backbone: nn.Module) -> set[str]:
        """Copies every tensor of the folder into `backbone` (its params may sit on the meta
        device: they are then allocated here, in their dtype); returns the loaded module keys
        (`backbone.<name>`)."""
        if any(p.is_meta for p in backbone.parameters()):
            backbone.to_empty(device="cpu")
        state = backbone.state_dict()
        loaded: set[str] = set()
        with torch.no_grad():
            for rule in rules(self.hf, self.model):
                if rule.lm[0] not in state:  # lm_head of a model built for classification
                    continue
                # a tensor this config leaves out (hf None) is a bias that is zeros there
                parts = (
                    rule.split(self._read(rule))
                    if rule.hf
                    else [torch.zeros_like(state[rule.lm[0]])]
                )
                for name, part in zip(rule.lm, parts, strict=True):
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

    def _read(self, rule: Rule) -> torch.Tensor:
        name = rule.hf if rule.hf in self.files else rule.hf.split(".", 1)[1]  # base-model saves
        if name not in self.files:
            raise ConfigError(f"{self.key}={self.source}: tensor {rule.hf} is missing")
        with safe_open(self.files[name], framework="pt") as f:
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
    with initialize_config_dir(str(project_conf()), version_base="1.3"):
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
