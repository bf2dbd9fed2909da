"""Causal language modelling; the output head is the backbone's (tied to the embedding unless
the model says otherwise)."""

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from lm_lab.data.loaders.language_modeling import IGNORE
from lm_lab.encoders.base import State
from lm_lab.tasks.base import TaskModule
from lm_lab.tasks.metrics import METRICS

SPLIT_OF_STAGE = {"val": "validation", "test": "test"}  # metric prefix -> the data split it scores


class LanguageModel(TaskModule):
    """Next-token loss; validation and test report loss, perplexity, bits per character and
    token accuracy over the scored (non-ignored) targets, the metric of recall probes."""

    METRICS = METRICS["generate"]  # logged as val/<name> and test/<name>

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.causal:
            raise ValueError(
                f"task={self.task_name} needs task.causal=true: a LM must not see the future"
            )
        if self.baseline is not None:
            raise ValueError(f"task={self.task_name} has no baseline: set task.baseline=null")
        self.val_acc, self.test_acc = MeanMetric(), MeanMetric()
        self.sparse_targets = False  # set from the datamodule in setup()

    def setup(self, stage: str) -> None:
        """Recall data (MQAR, induction) scores a few positions per sequence and says so."""
        self.sparse_targets = getattr(self.trainer.datamodule, "sparse_targets", False)

    def forward(self, input_ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        h = self.backbone(input_ids, pad_mask, causal=True)  # (B, T, D)
        return self.head(h)

    def head(self, h: Tensor) -> Tensor:
        return self.backbone.logits(h)  # (B, T, V)

    def step(
        self,
        input_ids: Tensor,
        state: State | None,
        offset: int,
        n_pad: Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[Tensor, State]:
        """Logits (B, t, V) of the next tokens, carrying the encoder state (generation).
        `last_only`: (B, 1, V) for the last position alone, all that sampling reads; a prompt's
        other positions would each cost a vocabulary projection (49152 x 576 for SmolLM2), as
        transformers' `logits_to_keep=1` also avoids."""
        h, state = self.backbone.step(input_ids, state, offset, n_pad)  # (B, t, D)
        return self.head(h[:, -1:] if last_only else h), state  # (B, t or 1, V)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Mean loss over scored targets, with the logits (N, V) and targets (N,) it came from.

        With sparse targets only the scored states are projected onto the vocabulary: MQAR at
        vocab 8192 scores 8 of 128 positions, and the (B, T, V) projection was most of the step.
        Dense data keeps every position, without the host sync that boolean indexing costs.
        """
        segments = batch.get("segments")  # (B, T): packed conversations (task=sft), else None
        h = self.backbone(batch["input_ids"], batch.get("pad_mask"), True, segments)  # (B, T, D)
        targets = batch["targets"]  # (B, T)
        if self.sparse_targets:
            scored = targets != IGNORE  # (B, T)
            h, targets = h[scored], targets[scored]  # (N, D), (N,)
        logits = self.head(h).flatten(0, -2)  # (N, V)
        targets = targets.flatten()  # (N,)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE), logits, targets

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        loss, logits, targets = self.loss(batch)
        scored = targets != IGNORE  # (N,)
        n = scored.sum()
        correct = (logits.argmax(-1) == targets)[scored].float().sum()
        getattr(self, f"{stage}_loss").update(loss, weight=n)
        getattr(self, f"{stage}_acc").update(correct / n.clamp(min=1), weight=n)

    def log_epoch(self, stage: str) -> Tensor:
        """ppl and bpc come from the epoch's mean loss, not from averaging per-batch values."""
        loss = super().log_epoch(stage)
        acc = getattr(self, f"{stage}_acc")
        self.log(f"{stage}/acc", acc.compute())
        acc.reset()
        self.log(f"{stage}/ppl", loss.exp())
        split = SPLIT_OF_STAGE[stage]  # bpc of a split counts that split's characters
        chars_per_token = (getattr(self.trainer.datamodule, "chars_per_token", None) or {}).get(
            split
        )
        if chars_per_token:
            self.log(f"{stage}/bpc", loss / math.log(2) / chars_per_token)
        return loss
