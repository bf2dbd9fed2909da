"""Running one command on many processes: DDP inside a Hydra multirun, the FSDP wrap policy and
a per-rank report. (Precision and node count from the environment: utils/resolvers.py.)

How Lightning's `ddp` strategy starts ranks: the process that calls `trainer.fit` is local rank 0
and re-executes the script for ranks 1..N-1 (`_SubprocessScriptLauncher`), building their command
from `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`, and exporting MASTER_ADDR,
MASTER_PORT, NODE_RANK, LOCAL_RANK and WORLD_SIZE into its own environment. Under `-m` that
re-runs the whole sweep in every child, in a `runs/` dir instead of the job's dir, and the
exported LOCAL_RANK makes the next job believe its ranks already exist. `job_scope` fixes all
three for the duration of one job and undoes them afterwards.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import open_dict, read_write

# what Lightning's launcher writes into the parent's environment (see the module docstring)
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# given to child ranks: they log to the console only, so the run dir holds rank 0's files alone
CHILD_OVERRIDES = ("hydra/job_logging=stdout",)


@contextmanager
def job_scope() -> Iterator[None]:
    """One Hydra job = one set of ranks. While the job runs, child ranks are launched with this
    job's own overrides (`hydra.overrides.task`) into this job's output dir; afterwards argv, the
    launch variables and the process group are as before, so the next job of a sweep starts
    its own ranks on a fresh port."""
    saved_argv = list(sys.argv)
    saved_env = {key: os.environ.get(key) for key in LAUNCH_ENV}
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    saved_run_dir = hydra.run.dir if hydra is not None else None
    if hydra is not None:
        sys.argv = [saved_argv[0], *hydra.overrides.task, *CHILD_OVERRIDES]
        _set_run_dir(hydra, hydra.runtime.output_dir)  # Lightning appends hydra.run.dir=<this>
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if hydra is not None:
            _set_run_dir(hydra, saved_run_dir)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def external_rank_overrides() -> list[str]:
    """torchrun and SLURM start every rank themselves: ranks other than 0 then log to the
    console only and write no .hydra/, so the run dir holds rank 0's files alone. (All ranks
    must agree on the run dir: pass hydra.run.dir=..., as the README's commands do.)"""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return [] if rank == "0" else [*CHILD_OVERRIDES, "hydra.output_subdir=null"]


def _set_run_dir(hydra: Any, run_dir: str | None) -> None:
    with read_write(hydra), open_dict(hydra):
        hydra.run.dir = run_dir


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
