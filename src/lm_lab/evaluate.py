"""`run(cfg)` behind eval.py: rebuild model, tokenizer and data from a checkpoint and test it,
or, with mode=icl|length|sft, run one of the probes of lm_lab.eval on it. The split and mode
names, the mode's settings and the checkpoint itself are checked before Lightning loads (with
the task class, in load_module)."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from lm_lab.build import load_module
from lm_lab.cli.config import (
    apply_extras,
    instantiate_dict,
    print_config_tree,
    send_logs_to_hydra,
)
from lm_lab.eval.modes import MODES, mode_check, mode_run
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.io import write_json
from lm_lab.utils.logging import get_logger

if TYPE_CHECKING:  # Lightning classes: imported for the annotations only
    import lightning as L

    from lm_lab.tasks.base import TaskModule

log = get_logger(__name__)

SPLITS = ("test", "validation")


def data_config(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The checkpoint's data config, or the one given on the command line resolved against the
    checkpoint's task (so `task: ${task.name}` means the task the model was trained for).
    A whole data config (`data=sst2`, it has a `_target_`) replaces the saved one: merged, a
    text-trained LM's `source.train: train.txt` would outlive the switch to CSV files."""
    if cfg.get("data") is None:
        if "_target_" not in saved.data:  # a Hugging Face folder knows no data of its own
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path}: pass data=<a data config>, e.g. data=sst2"
            )
        return saved.data
    merged = OmegaConf.merge(saved, {"paths": cfg.paths, "seed": cfg.seed})
    with open_dict(merged):
        merged.data = cfg.data if "_target_" in cfg.data else OmegaConf.merge(saved.data, cfg.data)
    return merged.data


def build_datamodule(data: DictConfig, module: "TaskModule") -> "L.LightningDataModule":
    """The data with the checkpoint's tokenizer and, for a classifier, its head's label order:
    other data (`data=...`) maps its labels to head outputs by name, never by re-sorting its
    own label set, and a label the head does not know is refused."""
    head = {} if module.label_names is None else {"label_names": list(module.label_names)}
    return instantiate(data, tokenizer=module.tokenizer, **head)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Tests `ckpt_path` (or probes it, per `mode`); writes <run dir>/metrics.json and returns
    its content."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r} is not one of {SPLITS}")
    mode = cfg.get("mode", "test")
    if mode != "test" and mode not in MODES:
        raise ConfigError(f"mode={mode}: not one of test, {', '.join(MODES)}")
    mode_check(mode, cfg)
    apply_extras(cfg)
    module, saved = load_module(cfg.ckpt_path, cfg.get("base_ckpt"))
    # Lightning came with the task class. Seeded once the weights are loaded, not before: no
    # number drawn before them survives, and the probes draw from their own seeded generators
    from lightning import seed_everything

    send_logs_to_hydra()  # Lightning's loggers, new since apply_extras
    seed_everything(cfg.seed, workers=True)
    print_config_tree(saved)
    if mode != "test":
        result = mode_run(mode)(module, saved, data_config(cfg, saved), cfg)
        write_json(Path(cfg.paths.output_dir) / "metrics.json", result)
        return result
    datamodule = build_datamodule(data_config(cfg, saved), module)
    datamodule.setup("test")
    from lm_lab.callbacks.progress_log import progress_bar

    # a file or pipe (> eval.log, CI) gets no tqdm bar: Lightning adds one when none is given
    logger = instantiate_dict(cfg.get("logger")) or False
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=[progress_bar()])
    if cfg.split == "test":
        trainer.test(module, datamodule=datamodule)
    else:
        trainer.validate(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k}
    out_dir = Path(cfg.paths.output_dir)
    result = {
        "metrics": metrics,
        "data": datamodule.stats,
        "ckpt_path": str(cfg.ckpt_path),
        "split": cfg.split,
    }
    write_json(out_dir / "metrics.json", result)
    log.info(f"run dir: {out_dir}")
    return result
