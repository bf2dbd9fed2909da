"""Exact resume: what Lightning leaves out of a checkpoint but a bit-exact continuation needs."""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from lm_lab.callbacks.csv_logger import AppendingCSVLogger

STATE_KEY = "lm_lab_resume"  # ExactResume's entry in a checkpoint


class ExactResume(L.Callback):
    """Puts into every checkpoint what Lightning leaves out but an exact resume needs: the torch
    RNG (dropout), the training loader's position (`ResumableLoader.state_dict`) and the metrics
    logged so far (`trainer.callback_metrics`); on load, the CSV logger forgets rows logged
    after the checkpoint (a kill -9 leaves some behind).

    Lightning starts every fit with no metrics; a run stopped during its test resumes from the
    final last.ckpt, whose fit has nothing left to do, so without the saved metrics metrics.json
    would hold the test metrics alone. They come back when the fit starts training, or at its end
    when it had nothing to train (a strategy that restores after setup, FSDP, loads the
    checkpoint after on_fit_start, so that hook is too early for it).

    Lightning saves stateful loaders itself but, in 2.6, never reloads them when the optimizer
    setup has already built the train loader (`estimated_stepping_batches`, used by the
    schedule), so the position is restored here, before the first resumed batch is drawn."""

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Tensors and ints only, so `torch.load(weights_only=True)` still reads the checkpoint."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        loader = _resumable(trainer.train_dataloader)
        checkpoint[STATE_KEY] = {
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda},
            "train_loader": loader.state_dict() if loader is not None else None,
            "metrics": {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()},
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._to_restore = checkpoint.get(STATE_KEY)
        if trainer.state.fn != TrainerFn.FITTING:
            return  # testing the best checkpoint replays nothing
        for logger in trainer.loggers:  # rows of the steps about to be replayed go
            if isinstance(logger, AppendingCSVLogger):
                logger.resume_at(checkpoint["global_step"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        _restore_metrics(trainer, state)
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        loader = _resumable(trainer.train_dataloader)
        if loader is not None and state["train_loader"] is not None:
            loader.load_state_dict(state["train_loader"])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A fit that resumed with nothing left to train never reached on_train_start."""
        if self._to_restore is not None and trainer.state.fn == TrainerFn.FITTING:
            state, self._to_restore = self._to_restore, None
            _restore_metrics(trainer, state)


def _restore_metrics(trainer: L.Trainer, state: dict[str, Any]) -> None:
    """The metrics the run had logged when the checkpoint was saved (absent in checkpoints
    written before they were saved); later logging overwrites them as it would have."""
    trainer.callback_metrics.update(state.get("metrics", {}))


def _resumable(loader: Any) -> Any:
    """The training DataLoader if it can report and restore its position, else None."""
    return loader if hasattr(loader, "load_state_dict") else None
