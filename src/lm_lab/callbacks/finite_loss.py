"""A NaN or infinite training loss stops the run at once, before any checkpoint can store the
broken weights, and says which step it was and which checkpoint is still good."""

from typing import Any

import lightning as L
import torch

from lm_lab.utils.errors import ConfigError


class TrainingDiverged(ConfigError):
    """The loss became NaN/inf; the fix is a config change (lr, clipping, precision)."""


class FiniteLoss(L.Callback):
    """Checks every training loss. Lightning runs checkpoint callbacks after all others, so a
    step with a non-finite loss is never saved."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or torch.isfinite(loss).all():
            return
        saved = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        kept = f"last good checkpoint: {saved}" if saved else "no checkpoint had been saved yet"
        raise TrainingDiverged(
            f"train/loss={float(loss)} at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}): training diverged and stopped; {kept}; lower "
            "task.optimizer.lr or set trainer.gradient_clip_val"
        )
