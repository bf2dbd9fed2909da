"""How the ranks of one Hydra job are launched: their command line, environment and run dir,
also under `-m`, torchrun and SLURM. Light imports only: train.py uses it before Hydra starts.

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

from hydra.core.hydra_config import HydraConfig
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
        dist = sys.modules.get("torch.distributed")  # no torch imported, no process group
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def external_rank_overrides() -> list[str]:
    """torchrun and SLURM start every rank themselves: ranks other than 0 then log to the
    console only and write no .hydra/, so the run dir holds rank 0's files alone. (All ranks
    must agree on the run dir: pass hydra.run.dir=..., as the README's commands do.)"""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return [] if rank == "0" else [*CHILD_OVERRIDES, "hydra.output_subdir=null"]


def _set_run_dir(hydra: Any, run_dir: str | None) -> None:
    with read_write(hydra), open_dict(hydra):
        hydra.run.dir = run_dir
