"""What data-parallel training needs inside a run: the FSDP wrap policy and a per-rank report.
(Launching the ranks: utils/launch.py; precision and node count: utils/resolvers.py.)"""

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.pytorch.utilities import rank_zero_info

# ---- FSDP ----------------------------------------------------------------------------------


def block_classes(blocks: list[str]) -> set[type]:
    """FSDP auto-wrap policy from dotted class names: one FSDP unit per encoder block."""
    return {get_class(name) for name in blocks}


# ---- a report at the start of every fit -----------------------------------------------------


class RankReport(L.Callback):
    """States the global batch once, and, when there are several ranks, one line per rank with
    the overrides and run dir it runs with: the proof that every rank trains the same job."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        accumulate = trainer.accumulate_grad_batches
        if batch_size is not None:
            rank_zero_info(
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
