"""`fit_and_test(cfg)`: the one place that ties data, model, trainer and evaluation together.

The part of train.py's job that needs Lightning and the model code: `lm_lab.train.run` checks
the config without them (a bad value is answered in ~2 s, not ~8) and imports this module then."""

import contextlib
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lm_lab.build import build_module, check_weights_fit
from lm_lab.callbacks.checkpointing import AtomicCheckpointIO
from lm_lab.checkpoint import saved_step
from lm_lab.cli.config import apply_extras, instantiate_dict
from lm_lab.cli.loggers import finish_wandb, log_config, log_hparams_results
from lm_lab.cli.run_lock import LOCK_FILE
from lm_lab.cli.validate import LIGHTNING_CKPT_NAMES, check_batches_per_epoch
from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.finetune.setup import prepare_finetune, save_adapter
from lm_lab.finetune.transfer import pretrained_tokenizer
from lm_lab.hf.folder import is_hf_source
from lm_lab.hf.load import Pretrained
from lm_lab.sizing import parameter_counts
from lm_lab.utils.io import METRICS_FILE, write_json
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)


def build_datamodule(cfg: DictConfig, hf_init: bool = False) -> TextDataModule:
    """Data first: the tokenizer is fitted here and sizes the model (a Hugging Face init_from
    has put its own tokenizer into cfg.tokenizer)."""
    tokenizer = (None if hf_init else pretrained_tokenizer(cfg)) or instantiate(cfg.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    return datamodule


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """`logger=null` / `logger=[]` runs without a logger (metrics.json is still written); the
    learning-rate monitor, which has nowhere to write then, is left out. Checkpoints are
    written whole or not at all (AtomicCheckpointIO)."""
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k}


def best_validation(trainer: L.Trainer) -> dict[str, Any] | None:
    """The best value of the monitored metric, its step and checkpoint; None without validation.
    `metrics` holds the last values, which are not the best once the model overfits."""
    callback = trainer.checkpoint_callback
    if callback is None or callback.best_model_score is None:
        return None
    path = callback.best_model_path
    return {
        "metric": callback.monitor,
        "mode": callback.mode,
        "value": float(callback.best_model_score),
        "step": saved_step(path),
        "model_path": path,
    }


def hparams_best(best: dict[str, Any] | None) -> dict[str, float]:
    return {f"best/{best['metric']}": best["value"]} if best else {}


def fit_and_test(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint, on a config `train.run` has checked and with its run
    dir locked; writes <run dir>/metrics.json and returns its content."""
    apply_extras(cfg)
    L.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    reset_peak_rss()
    hf_init = is_hf_source(cfg.get("init_from"))
    pretrained = Pretrained(cfg.init_from) if hf_init else None
    datamodule = build_datamodule(cfg, hf_init)
    check_batches_per_epoch(cfg, len(datamodule.train_dataloader()))
    module = build_module(cfg, datamodule.tokenizer, datamodule.label_names)
    transferred = pretrained.load_into(module.backbone) if pretrained else None
    module = prepare_finetune(cfg, module, transferred)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    trainer = build_trainer(cfg)
    log_config(trainer, module.run_config)
    out_dir = Path(cfg.paths.output_dir)
    rank_zero_only(datamodule.tokenizer.save)(out_dir / "tokenizer.json")

    if cfg.get("train", True):
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
            check_weights_fit(module, ckpt_path)
        # weights_only: Lightning's own read of the checkpoint unpickles no code either
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = final_metrics(trainer)
    best = best_validation(trainer)
    if cfg.get("test", True):
        best_path = _best_checkpoint(trainer)
        trainer.test(module, datamodule=datamodule, ckpt_path=best_path, weights_only=True)
        metrics |= final_metrics(trainer)
    save_adapter(module, out_dir)
    results = {k: v for k, v in metrics.items() if k.startswith("test/")}
    log_hparams_results(trainer, module.run_config, results | hparams_best(best))

    result = {
        "metrics": metrics,
        "best": best,
        "data": datamodule.stats,
        "params": parameter_counts(module) | module.param_report,  # totals + trainable by group
        "wall_time_s": round(time.perf_counter() - started, 2),
        "run_dir": str(out_dir),
        "disk_bytes": disk_bytes(out_dir),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(out_dir / METRICS_FILE, result)
    finish_wandb()
    log.info(f"params: {result['params']}; peak RSS {result['peak_rss_mb']} MB; run dir: {out_dir}")
    return result


def reset_peak_rss() -> None:
    """Start the process's high-water mark again from what it holds now (Linux: `5` into
    /proc/self/clear_refs), so that each of several runs in one process (a sweep, a table
    script) reports its own peak, not the largest of the runs before it (a second full
    fine-tune of SmolLM2 in one process read 6.3 GB where the first read 4.5). Elsewhere the
    mark stays the process's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """The peak resident memory since `reset_peak_rss` (else since the process started), in
    MB (`ru_maxrss`, KiB on Linux): what a run needs in RAM, weights, activations and optimizer
    state together, with what the process held before it (imports, a model loaded earlier)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def disk_bytes(run_dir: Path) -> int:
    """Bytes of the files the run leaves in its run dir (checkpoints, logs, tokenizer): what a
    run costs on disk, checkpoints mostly. Counted as metrics.json is written, so that file and
    run.lock (removed at the end) are not in it."""
    left = (p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in left if p.name != LOCK_FILE)


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """Test the best weights when a checkpoint was kept, else the weights in memory."""
    callback = trainer.checkpoint_callback
    return getattr(callback, "best_model_path", None) or None
