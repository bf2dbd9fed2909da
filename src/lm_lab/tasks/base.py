"""The LightningModule every task builds on: optimizer, schedule and a self-contained checkpoint."""

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lm_lab.checkpoint import KEY, CheckpointMeta
from lm_lab.encoders.backbone import Backbone
from lm_lab.utils.errors import ConfigError


def cosine_with_warmup(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> float:
    """Multiplier on the peak lr: linear warmup, then cosine decay to `min_lr_ratio`."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and embeddings (every tensor of 2+ dims), never on biases or norm
    gains. The token embedding is decayed on purpose, as nanoGPT and GPT-2 do: a LM's head is
    tied to it, so it is the output matrix too, and rare tokens' rows would otherwise keep their
    early, large updates. Frozen parameters are left out, so fine-tuning strategies need no
    optimizer of their own."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class TaskModule(L.LightningModule):
    """Owns what all tasks share, so a task file holds only its head, loss and metrics.

    Validation and test run the same code on two sets of metrics, named by stage (`val_loss`,
    `test_loss`, ...): a task's `eval_step(batch, stage)` updates them, and its `log_epoch(stage)`
    logs and resets them at the end of the epoch (this one does `<stage>/loss`).
    """

    def __init__(
        self,
        backbone: Backbone,
        tokenizer: Any,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        name: str,
        causal: bool,
        monitor: str,
        monitor_mode: str,
        label_names: list[str] | None = None,
        compile: bool = False,
        baseline: Any = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler)
        self.task_name, self.causal = name, causal
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.label_names = list(label_names) if label_names else None
        self.compile_backbone = compile
        if isinstance(baseline, str):  # `task.baseline=tfidf_lr` sets a string, not the config
            raise ValueError(
                f"task.baseline={baseline}: choose a baseline with task/baseline={baseline} "
                "(conf/task/baseline/), or turn it off with task.baseline=null"
            )
        self.baseline = baseline  # a reference fitted on the raw splits (lm_lab.baselines) or None
        self.run_config: dict[str, Any] = {}  # the resolved run config, set by lm_lab.fit
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        """Update the `stage` ("val" or "test") metrics with one batch."""
        raise NotImplementedError

    def log_epoch(self, stage: str) -> Tensor:
        """Log and reset the `stage` metrics; returns the epoch's mean loss."""
        metric = getattr(self, f"{stage}_loss")
        loss = metric.compute()
        metric.reset()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def configure_model(self) -> None:
        if self.compile_backbone:
            self.backbone.compile()  # in place: state-dict keys stay the same

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optimizer_cfg
        fused = cfg.get("fused", "auto")
        opt = torch.optim.AdamW(
            param_groups(self, cfg["weight_decay"]),
            lr=cfg["lr"],
            betas=tuple(cfg.get("betas", (0.9, 0.99))),
            fused=_fused_supported() if fused == "auto" else bool(fused),
        )
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: cosine_with_warmup(
                step,
                self.scheduler_cfg.get("warmup_steps", 0),
                total,
                self.scheduler_cfg.get("min_lr_ratio", 0.1),
            ),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = None, **_: Any
    ) -> "TaskModule":
        """Lightning's usual entry point would call `cls(**hyper_parameters)`, but a backbone and
        a tokenizer are not hyper-parameters: rebuilding needs the config the checkpoint carries,
        the fine-tuning code and the encoders, i.e. the assembly layer above tasks/. So this
        names that layer's function instead of reaching up to it (an import circle)."""
        raise ConfigError(
            f"{checkpoint_path}: {cls.__name__}.load_from_checkpoint cannot rebuild an lm_lab "
            f"module; use lm_lab.build.load_task(path, {cls.__name__})"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Everything eval.py and generate.py need travels inside the checkpoint."""
        checkpoint[KEY] = CheckpointMeta.of(self).to_dict()


def _fused_supported() -> bool:
    """Fused AdamW runs on CPU and CUDA since torch 2.4; one kernel per step instead of many."""
    return tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
