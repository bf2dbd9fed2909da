"""`python train.py resume=<run dir>` continues an interrupted run in its own run dir.

The run's config comes from its last checkpoint (so nothing has to be retyped, and nothing can
silently differ), Lightning restores weights, optimizer, schedule and loop position from it,
`ExactResume` the data position and the RNG, and the CSV logger appends to the same metrics.csv.
Hydra puts the resumed process in that same run dir because conf/hydra/default.yaml sets
`run.dir: ${if_null:${resume},<new dir>}`.
"""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm_lab.utils.checkpoint import read_checkpoint
from lm_lab.utils.errors import ConfigError

LAST = Path("checkpoints") / "last.ckpt"
STATE_KEY = "lm_lab_resume"  # ExactResume's entry in a checkpoint


def resume_config(cfg: DictConfig) -> DictConfig:
    """`cfg` itself unless cfg.resume names a run dir; then that run's saved config, set to fit
    from its last.ckpt."""
    run_dir = cfg.get("resume")
    if not run_dir:
        return cfg
    ckpt = Path(run_dir) / LAST
    if not ckpt.is_file():
        raise ConfigError(
            f"resume={run_dir}: no {LAST} in it; give the run dir that printed "
            "'resume with: ...', or start a new run"
        )
    _reject_other_overrides(run_dir)
    saved = OmegaConf.create(read_checkpoint(ckpt)["lm_lab"]["config"])
    if Path(saved.paths.output_dir).resolve() != Path(run_dir).resolve():
        raise ConfigError(
            f"resume={run_dir}: the checkpoint was written in {saved.paths.output_dir}; "
            "resume a run in the folder it was started in"
        )
    saved.resume = str(run_dir)
    saved.ckpt_path = str(ckpt)
    return saved


def _reject_other_overrides(run_dir: str) -> None:
    """A resumed run is the same run: a changed setting would make it a different one."""
    if not HydraConfig.initialized():
        return
    others = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    if others:
        raise ConfigError(
            f"resume={run_dir}: a resumed run keeps its own config; drop {' '.join(others)} "
            "(or start a new run with ckpt_path=<its last.ckpt> and the new settings)"
        )


class ExactResume(L.Callback):
    """Puts into every checkpoint what Lightning leaves out but an exact resume needs: the torch
    RNG (dropout) and the training loader's position (`ResumableLoader.state_dict`).

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
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._to_restore = checkpoint.get(STATE_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        loader = _resumable(trainer.train_dataloader)
        if loader is not None and state["train_loader"] is not None:
            loader.load_state_dict(state["train_loader"])


def _resumable(loader: Any) -> Any:
    """The training DataLoader if it can report and restore its position, else None."""
    return loader if hasattr(loader, "load_state_dict") else None
