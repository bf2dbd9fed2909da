"""Text classification: backbone -> pooled vector -> linear head, with accuracy and macro-F1."""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from rich.table import Table
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from lm_lab.tasks.base import TaskModule
from lm_lab.tasks.ngram_bag import NgramBag
from lm_lab.tasks.pooling import POOLINGS, pool
from lm_lab.utils.logging import get_logger, render

log = get_logger(__name__)


class Classifier(TaskModule):
    """Pools encoder states over non-pad tokens; reports acc and macro-F1 on val and test."""

    METRICS = ("loss", "acc", "f1")  # logged as val/<name> and test/<name>

    def __init__(
        self,
        *args: Any,
        pooling: str = "mean",
        head_dropout: float = 0.1,
        label_smoothing: float = 0.0,
        ngram_bag: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.label_names:
            raise ValueError("task=classify needs label names from the data (data has no labels)")
        if pooling not in POOLINGS:
            raise ValueError(f"task.pooling={pooling!r} is not one of {POOLINGS}")
        self.pooling = pooling
        self.label_smoothing = label_smoothing  # training loss only: eval losses stay comparable
        n_classes = len(self.label_names)
        self.head_dropout = nn.Dropout(head_dropout)
        self.ngram_bag = NgramBag(**ngram_bag) if ngram_bag else None  # the "wide" half
        width = self.backbone.d_model + (self.ngram_bag.dim if self.ngram_bag else 0)
        self.head = nn.Linear(width, n_classes)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(n_classes, average="micro"),
                "f1": MulticlassF1Score(n_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.confusion = MulticlassConfusionMatrix(n_classes)
        self.baseline_scores: dict[str, float] | None = None  # fitted once, at the first test

    def forward(self, input_ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        h = self.backbone(input_ids, pad_mask, causal=self.causal)  # (B, T, D)
        pooled = self.head_dropout(pool(h, pad_mask, self.pooling))  # (B, D)
        if self.ngram_bag is not None:
            pooled = torch.cat([pooled, self.ngram_bag(input_ids, pad_mask)], -1)  # (B, D + dim)
        return self.head(pooled)  # (B, C)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch["input_ids"], batch["pad_mask"])  # (B, C)
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        logits = self(batch["input_ids"], batch["pad_mask"])  # (B, C)
        loss = F.cross_entropy(logits, batch["labels"])
        getattr(self, f"{stage}_loss").update(loss, weight=len(logits))
        getattr(self, f"{stage}_metrics").update(logits, batch["labels"])
        if stage == "test":
            self.confusion.update(logits, batch["labels"])

    def log_epoch(self, stage: str) -> Tensor:
        loss = super().log_epoch(stage)
        self.log_dict(getattr(self, f"{stage}_metrics").compute(), prog_bar=True)
        getattr(self, f"{stage}_metrics").reset()
        return loss

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.baseline is not None:
            self.log_dict(self._baseline_scores())
        print_confusion(self.confusion.compute().cpu(), self.label_names)
        self.confusion.reset()

    def _baseline_scores(self) -> dict[str, float]:
        """The reference's val/test scores beside the model's, on the same examples: fitted on
        global rank 0 only, then broadcast, so every rank logs the same numbers."""
        if self.baseline_scores is None:
            scores = None
            if self.trainer.is_global_zero:
                data = self.trainer.datamodule
                splits = (data.texts_and_labels(s) for s in ("train", "validation", "test"))
                scores = self.baseline.fit_score(*splits)
            self.baseline_scores = self.trainer.strategy.broadcast(scores, src=0)
        return self.baseline_scores

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self(batch["input_ids"], batch["pad_mask"]).softmax(-1)  # (B, C)


@rank_zero_only
def print_confusion(matrix: torch.Tensor, label_names: list[str]) -> None:
    """Rows are true labels, columns predictions: where the classifier confuses what."""
    table = Table(title="test confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in label_names:
        table.add_column(name[:10], justify="right")
    for name, row in zip(label_names, matrix.tolist(), strict=True):
        table.add_row(name, *(str(v) for v in row))
    log.info(render(table))
