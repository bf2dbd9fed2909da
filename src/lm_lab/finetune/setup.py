"""The fine-tuning steps of a run: transfer, strategy, parameter report, and the small artefact.

`prepare_finetune` is the one call train.run makes before fitting; `save_adapter` writes
`<run dir>/checkpoints/adapter.pt` (config, tokenizer, label names and only the state a base
checkpoint cannot give back); `restore_adapter` rebuilds a module from that plus the base.
"""

from pathlib import Path
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's own, without it
from omegaconf import DictConfig
from rich.table import Table
from torch import nn

from lm_lab.checkpoint import CheckpointMeta
from lm_lab.finetune.base import adapter_state, apply_finetune, base_name, trainable_report
from lm_lab.finetune.transfer import load_backbone
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger, render

log = get_logger(__name__)

ADAPTER_FILE = "adapter.pt"


def prepare_finetune(
    cfg: DictConfig, module: nn.Module, transferred: set[str] | None = None
) -> nn.Module:
    """init_from weights (unless the caller loaded them already: `transferred`, the keys it
    loaded), then the strategy; prints and keeps (`module.param_report`) the table."""
    if transferred is None:
        init_from = cfg.get("init_from")
        transferred = load_backbone(module, init_from, cfg.model) if init_from else set()
    strategy = apply_finetune(cfg, module)
    module.transferred_keys = transferred
    module.param_report = trainable_report(module)
    print_report(module.param_report, type(strategy).__name__ if strategy else "none")
    return module


@rank_zero_only
def print_report(report: dict[str, Any], strategy: str) -> None:
    """Shows at start what a strategy trains, so a wrong target never goes unnoticed."""
    table = Table(title=f"finetune={strategy}: trainable parameters")
    for column in ("group", "trainable", "total", "%"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for group, row in report.items():
        table.add_row(group, f"{row['trainable']:,}", f"{row['total']:,}", f"{row['percent']:.2f}")
    log.info(render(table))
    log.info(
        f"trainable params: {report['all']['trainable']} / {report['all']['total']} "
        f"({report['all']['percent']}%)"
    )


def save_adapter(module: nn.Module, run_dir: str | Path) -> Path | None:
    """Writes the artefact when the strategy froze pretrained weights (else there is no saving:
    best.ckpt is the artefact). Returns its path or None."""
    transferred = getattr(module, "transferred_keys", set())
    state = adapter_state(module, transferred)
    if len(state) == len(module.state_dict()):
        return None
    path = Path(run_dir) / "checkpoints" / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta.of(module, adapter_only=True, base_keys=sorted(transferred))
    meta.save(path, state)
    log.info(f"adapter-only artefact: {path} ({len(state)} of {len(module.state_dict())})")
    return path


def restore_adapter(
    module: nn.Module,
    cfg: DictConfig,
    ckpt: dict[str, Any],
    base_keys: list[str],
    base_ckpt: str | None,
    transferred: set[str] | None = None,
) -> None:
    """Base backbone from `base_ckpt` (default: the run's init_from; or already loaded by the
    caller, `transferred` naming its keys), the strategy, then the artefact's state; every key
    must be accounted for by one of the two."""
    base = base_ckpt or cfg.get("init_from")
    if not base:
        raise ConfigError("ckpt_path is an adapter-only artefact: pass base_ckpt=<the LM ckpt>")
    if transferred is None:
        key = "base_ckpt" if base_ckpt else "init_from"
        transferred = load_backbone(module, base, cfg.model, key)
    if transferred != set(base_keys):
        raise ConfigError(f"base_ckpt={base}: its backbone keys differ from those trained on")
    apply_finetune(cfg, module)
    result = module.load_state_dict(ckpt["state_dict"], strict=False)
    missing = {k for k in result.missing_keys if base_name(k) not in transferred}
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"adapter artefact does not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
