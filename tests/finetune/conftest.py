"""Tiny classifiers and LM checkpoints built from the composed configs, without training."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lm_lab.build import build_module
from lm_lab.checkpoint import CheckpointMeta
from lm_lab.data.tokenization.tokenizers import ByteTokenizer

LABELS = ["neg", "neu", "pos"]


@pytest.fixture
def classifier(compose: Callable[..., DictConfig]) -> Callable[..., tuple[nn.Module, DictConfig]]:
    """classifier("model=bilstm", "finetune=lora") -> (module in eval mode, cfg); nothing
    applied yet, so a test can compare before and after."""

    def _build(*overrides: str) -> tuple[nn.Module, DictConfig]:
        cfg = compose("task=classify", *overrides)
        torch.manual_seed(0)
        return build_module(cfg, ByteTokenizer(), LABELS).eval(), cfg

    return _build


@pytest.fixture
def lm_checkpoint(compose: Callable[..., DictConfig], tmp_path: Path) -> Callable[..., Path]:
    """lm_checkpoint("model=bilstm") -> path of an untrained task=generate checkpoint (random
    weights, byte tokenizer) in lm_lab's checkpoint format."""

    def _save(*overrides: str) -> Path:
        cfg = compose("task=generate", "tokenizer=byte", *overrides)
        tokenizer = ByteTokenizer()
        module = build_module(cfg, tokenizer, None)
        path = tmp_path / "lm.ckpt"
        meta = CheckpointMeta(OmegaConf.to_container(cfg, resolve=True), tokenizer.to_json())
        meta.save(path, module.state_dict())
        return path

    return _save


@pytest.fixture
def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded byte sequences: (2, 9) ids and their pad mask."""
    ids = torch.randint(1, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    pad_mask = torch.zeros(2, 9, dtype=torch.bool)
    pad_mask[1, 5:] = True
    return ids.masked_fill(pad_mask, 0), pad_mask
