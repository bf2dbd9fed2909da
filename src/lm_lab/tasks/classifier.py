"""Text classification: backbone -> pooled vector -> linear head, with accuracy and macro-F1."""

import math
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
from lm_lab.tasks.metrics import METRICS
from lm_lab.tasks.ngram_bag import NgramBag
from lm_lab.tasks.pooling import POOLINGS, pool
from lm_lab.utils.logging import get_logger, render

log = get_logger(__name__)


class Classifier(TaskModule):
    """Pools encoder states over non-pad tokens; reports acc and macro-F1 on val and test."""

    METRICS = METRICS["classify"]  # logged as val/<name> and test/<name>

    def __init__(
        self,
        *args: Any,
        pooling: str = "mean",  # conf/task/classify.yaml's null is resolved by lm_lab.build
        head_dropout: float = 0.1,
        label_smoothing: float = 0.0,
        ngram_bag: dict[str, Any] | None = None,
        members: int = 1,
        more_backbones: nn.ModuleList | None = None,
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
        more = list(more_backbones or [])
        if members < 1 or len(more) != members - 1:
            raise ValueError(f"task.members={members}: give an integer >= 1")
        self.others = nn.ModuleList(  # members 2..K: their own backbone, bag and head
            nn.ModuleDict(
                {"backbone": b, "head": nn.Linear(width, n_classes)}
                | ({"ngram_bag": NgramBag(**ngram_bag)} if ngram_bag else {})
            )
            for b in more
        )
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
        """Logits (B, C). With `members` > 1, the log of the members' mean probability: the
        ensemble's prediction, so softmax, argmax and cross-entropy read it like logits."""
        logits = self.member_logits(input_ids, pad_mask)  # (K, B, C)
        if len(logits) == 1:
            return logits[0]
        return logits.log_softmax(-1).logsumexp(0) - math.log(len(logits))  # (B, C)

    def member_logits(self, input_ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Each member's own logits (K, B, C); member 1 is `backbone`, `ngram_bag`, `head`."""
        members = [(self.backbone, self.ngram_bag, self.head)]
        members += [(m["backbone"], getattr(m, "ngram_bag", None), m["head"]) for m in self.others]
        return torch.stack([self._logits(*m, input_ids, pad_mask) for m in members])

    def features(
        self, input_ids: Tensor, pad_mask: Tensor | None = None, backbone: nn.Module | None = None
    ) -> Tensor:
        """The pooled vector (B, D) the head reads (before head dropout and the n-gram bag), of
        `backbone` (default: member 1's). From a causal decoder with `last` pooling it is the
        decoder's own final hidden state at each row's last real token."""
        h = (backbone or self.backbone)(input_ids, pad_mask, causal=self.causal)  # (B, T, D)
        return pool(h, pad_mask, self.pooling)  # (B, D)

    def _logits(
        self,
        backbone: nn.Module,
        bag: NgramBag | None,
        head: nn.Module,
        input_ids: Tensor,
        pad_mask: Tensor | None,
    ) -> Tensor:
        pooled = self.head_dropout(self.features(input_ids, pad_mask, backbone))  # (B, D)
        if bag is not None:
            pooled = torch.cat([pooled, bag(input_ids, pad_mask)], -1)  # (B, D + dim)
        return head(pooled)  # (B, C)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Each member learns from its own loss, as if trained alone (the mean over members
        scales every gradient by 1/K, which AdamW's per-weight step size ignores; only the global
        gradient-norm clip still sees them together): averaging independently trained models is
        what makes an ensemble beat its members."""
        logits = self.member_logits(batch["input_ids"], batch["pad_mask"])  # (K, B, C)
        labels = batch["labels"].repeat(len(logits))  # (K * B,)
        loss = F.cross_entropy(logits.flatten(0, 1), labels, label_smoothing=self.label_smoothing)
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
