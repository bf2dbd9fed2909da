"""Causal language modelling with the output head tied to the token embedding."""

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from lm_lab.encoders.base import State
from lm_lab.tasks.base import TaskModule


class LanguageModel(TaskModule):
    """Next-token loss; validation and test report loss, perplexity, bits per character and
    token accuracy over the scored (non-ignored) targets, the metric of recall probes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.causal:
            raise ValueError("task=generate needs task.causal=true: a LM must not see the future")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc, self.test_acc = MeanMetric(), MeanMetric()

    def forward(self, input_ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        h = self.backbone(input_ids, pad_mask, causal=True)  # (B, T, D)
        return self.head(h)

    def head(self, h: Tensor) -> Tensor:
        return h @ self.backbone.embed.weight.T  # (B, T, V): tied to the embedding

    def step(
        self, input_ids: Tensor, state: State | None, offset: int, n_pad: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Logits (B, t, V) of the next tokens, carrying the encoder state (generation)."""
        h, state = self.backbone.step(input_ids, state, offset, n_pad)  # (B, t, D)
        return self.head(h), state

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean loss over scored targets, and the logits (B, T, V) it came from."""
        logits = self(batch["input_ids"], batch.get("pad_mask"))  # (B, T, V)
        targets = batch["targets"].flatten()
        return F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=-100), logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._update("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._update("test", batch)

    def _update(self, stage: str, batch: dict[str, Tensor]) -> None:
        loss, logits = self.loss(batch)
        scored = batch["targets"] != -100  # (B, T)
        n = scored.sum()
        correct = (logits.argmax(-1) == batch["targets"])[scored].float().sum()
        getattr(self, f"{stage}_loss").update(loss, weight=n)
        getattr(self, f"{stage}_acc").update(correct / n.clamp(min=1), weight=n)

    def _log_epoch(self, stage: str) -> None:
        """ppl and bpc come from the epoch's mean loss, not from averaging per-batch values."""
        metric, acc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        loss = metric.compute()
        metric.reset()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/acc", acc.compute())
        acc.reset()
        self.log(f"{stage}/ppl", loss.exp())
        chars_per_token = getattr(self.trainer.datamodule, "chars_per_token", None)
        if chars_per_token:
            self.log(f"{stage}/bpc", loss / math.log(2) / chars_per_token)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
