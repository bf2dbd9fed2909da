"""`run(cfg)`: the one place that ties data, model, trainer and evaluation together."""

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lm_lab.build import build_module
from lm_lab.cli.config import apply_extras, instantiate_dict
from lm_lab.cli.loggers import finish_wandb, log_config
from lm_lab.cli.resume import resume_config
from lm_lab.cli.validate import validate_config
from lm_lab.data.datamodule import TextDataModule
from lm_lab.finetune.setup import prepare_finetune, save_adapter
from lm_lab.finetune.transfer import pretrained_tokenizer
from lm_lab.sizing import parameter_counts
from lm_lab.utils.io import write_json


def build_datamodule(cfg: DictConfig) -> TextDataModule:
    """Data first: the tokenizer is fitted here and sizes the model."""
    tokenizer = pretrained_tokenizer(cfg) or instantiate(cfg.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    return datamodule


def build_trainer(cfg: DictConfig) -> L.Trainer:
    return instantiate(
        cfg.trainer,
        callbacks=instantiate_dict(cfg.get("callbacks")),
        logger=instantiate_dict(cfg.get("logger")) or False,
    )


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; writes <run dir>/metrics.json and returns its content."""
    cfg = resume_config(cfg)  # resume=<run dir>: that run's config and its last.ckpt
    validate_config(cfg)
    apply_extras(cfg)
    L.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.tokenizer, datamodule.label_names)
    module = prepare_finetune(cfg, module)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    trainer = build_trainer(cfg)
    log_config(trainer, module.run_config)
    out_dir = Path(cfg.paths.output_dir)
    rank_zero_only(datamodule.tokenizer.save)(out_dir / "tokenizer.json")

    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = final_metrics(trainer)
    if cfg.get("test", True):
        trainer.test(module, datamodule=datamodule, ckpt_path=_best_checkpoint(trainer))
        metrics |= final_metrics(trainer)
    save_adapter(module, out_dir)

    result = {
        "metrics": metrics,
        "data": datamodule.stats,
        "params": parameter_counts(module) | module.param_report,  # totals + trainable by group
        "wall_time_s": round(time.perf_counter() - started, 2),
        "run_dir": str(out_dir),
    }
    write_json(out_dir / "metrics.json", result)
    finish_wandb()
    rank_zero_info(f"params: {result['params']}; run dir: {out_dir}")
    return result


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """Test the best weights when a checkpoint was kept, else the weights in memory."""
    callback = trainer.checkpoint_callback
    return getattr(callback, "best_model_path", None) or None
