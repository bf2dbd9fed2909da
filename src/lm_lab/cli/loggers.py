"""What every run does with its loggers beyond what Lightning does: log the resolved config, and
close the W&B run so the next job of a multirun (same process) opens its own."""

import sys
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger


def log_config(trainer: L.Trainer, config: dict[str, Any]) -> None:
    """The resolved run config goes to every logger (the W&B run config, the CSV hparams.yaml)."""
    for logger in trainer.loggers:
        logger.log_hyperparams(config)


def log_hparams_results(
    trainer: L.Trainer, config: dict[str, Any], results: dict[str, float]
) -> None:
    """TensorBoard's HParams tab shows a run only once its hyper-parameters are logged with
    metrics; this is done at the end, when the results exist, under `hp/<name>` (the real
    curves keep their own tags and points)."""
    metrics = {f"hp/{name}": value for name, value in results.items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and metrics:
            logger.log_hyperparams(config, metrics=metrics, step=trainer.global_step)


def finish_wandb(exit_code: int = 0) -> None:
    """Ends the open W&B run, if any; a no-op when wandb was never imported."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)
