"""Bits per character: each split's loss divided by that split's own characters per token."""

import math

import lightning as L
import pytest

from lm_lab.build import build_module
from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import ByteTokenizer

EMOJI = "\U0001f600"  # one character, four UTF-8 bytes


class ScriptSplits:
    """ASCII training and validation text (1 character per byte token); the test text is
    emoji only, 4 bytes each, so its characters per token are exactly 0.25."""

    name = "scripts"

    def __init__(self, test: bool = True) -> None:
        self.test = test

    def load(self) -> dict[str, Split]:
        splits = {"train": Split(["hello world " * 20]), "validation": Split(["a quiet day " * 8])}
        return splits | ({"test": Split([EMOJI * 40])} if self.test else {})


def scored(compose, source: ScriptSplits) -> dict[str, float]:
    dm = TextDataModule(source, ByteTokenizer(), "generate", batch_size=4, block_size=8)
    dm.setup()
    module = build_module(compose("task=generate", "tokenizer=byte"), dm.tokenizer, None)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    metrics = {}
    for run in (trainer.validate, trainer.test):  # each run starts with empty callback_metrics
        run(module, datamodule=dm, verbose=False)
        metrics |= {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics


def test_test_bpc_uses_the_test_splits_characters_per_token(compose):
    metrics = scored(compose, ScriptSplits())
    assert metrics["val/bpc"] == pytest.approx(metrics["val/loss"] / math.log(2) / 1.0)
    assert metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / math.log(2) / 0.25)


def test_without_a_test_split_test_bpc_is_validations(compose):
    metrics = scored(compose, ScriptSplits(test=False))
    assert metrics["test/loss"] == pytest.approx(metrics["val/loss"])
    assert metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / math.log(2) / 1.0)
