"""A per-rank report at the start of every fit."""

import lightning as L
from hydra.core.hydra_config import HydraConfig

from lm_lab.utils.logging import get_logger

log = get_logger(__name__)


class RankReport(L.Callback):
    """States the global batch once, and, when there are several ranks, one line per rank with
    the overrides and run dir it runs with: the proof that every rank trains the same job."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        accumulate = trainer.accumulate_grad_batches
        if batch_size is not None:
            log.info(
                f"global batch: {batch_size} per device x {trainer.world_size} devices "
                f"x {accumulate} accumulation = {batch_size * trainer.world_size * accumulate}"
            )
        if trainer.world_size > 1:
            overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
            line = (
                f"[rank {trainer.global_rank}/{trainer.world_size}] overrides={overrides} "
                f"run_dir={trainer.default_root_dir}\n"
            )
            print(line, end="", flush=True)  # every rank, on purpose; one write, not interleaved
