"""Helpers around composed configs: printing, building lists of objects, and run-dir files."""

import logging
import warnings
from typing import Any

import rich.syntax
import rich.tree
from hydra.utils import instantiate
from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's own, without it
from omegaconf import DictConfig, OmegaConf

from lm_lab.utils.logging import get_logger, render

log = get_logger(__name__)

PRINT_ORDER = ("data", "tokenizer", "model", "task", "finetune", "trainer", "callbacks", "logger")


def apply_extras(cfg: DictConfig) -> None:
    """Conveniences that must happen before anything else prints."""
    send_logs_to_hydra()
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        print_config_tree(cfg)


def send_logs_to_hydra() -> None:
    """Hydra logs to console and <run dir>/<job>.log: Lightning's loggers and ours write there,
    once (a handler of their own would repeat each line, and Lightning turns propagation off
    when it adds its handler). Lightning adds them on import: eval.py and generate.py, which
    load it with the checkpoint's task class, after apply_extras, call this again then."""
    if not logging.getLogger().handlers:
        return  # no Hydra (tests, notebooks): each logger keeps its own console handler
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lm_lab"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """One branch per group so a run's choices can be read at a glance."""
    tree = rich.tree.Tree("config", guide_style="dim")
    keys = [k for k in PRINT_ORDER if k in cfg] + [k for k in cfg if k not in PRINT_ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=False) if isinstance(node, DictConfig) else str(node)
        tree.add(f"[bold]{key}").add(rich.syntax.Syntax(text, "yaml"))
    log.info(render(tree))


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Builds every `_target_` entry of a group such as callbacks/ or logger/; nulls skip."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]
