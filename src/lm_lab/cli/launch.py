"""How the ranks of one Hydra job are launched: their command line, environment and run dir,
also under `-m`, torchrun and SLURM. Light imports only: train.py uses it before Hydra starts.

How Lightning's `ddp` strategy starts ranks: the process that calls `trainer.fit` is local rank 0
and re-executes the script for ranks 1..N-1 (`_SubprocessScriptLauncher`), building their command
from `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`, and exporting MASTER_ADDR,
MASTER_PORT, NODE_RANK, LOCAL_RANK and WORLD_SIZE into its own environment. Under `-m` that
re-runs the whole sweep in every child, in a `runs/` dir instead of the job's dir, and the
exported LOCAL_RANK makes the next job believe its ranks already exist. `job_scope` fixes all
three for the duration of one job and undoes them afterwards.

A failing rank must fail its job, not the sweep: Lightning's child-process observer SIGKILLs the
launching process (the whole sweep, exit 137) when a child rank exits non-zero, and nothing
stops a child rank that waits on the process group after rank 0 failed. Within a job,
`ChildRanks` watches the children instead: a failed child is reported, the others are killed
(rank 0's pending collective then fails, so its job fails with failed.json under -m), and no
child outlives the job.
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

# what Lightning's launcher writes into the parent's environment (see the module docstring)
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# given to child ranks: they log to the console only, so the run dir holds rank 0's files alone
CHILD_OVERRIDES = ("hydra/job_logging=stdout",)


class ChildRanks:
    """The child ranks Lightning launched for one job, polled by a thread (what Lightning's
    observer does, but a failure ends the job rather than the process that runs the sweep)."""

    POLL_S = 0.5

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.failed: tuple[int, int] | None = None  # (rank, exit status) of the first failure
        self._done = threading.Event()

    def watch(self, procs: list[subprocess.Popen]) -> None:
        """Stands in for Lightning's `_launch_process_observer(procs)`."""
        self.procs = procs
        threading.Thread(target=self._poll, name="lm_lab-child-ranks", daemon=True).start()

    def _poll(self) -> None:
        while self._running() and not self._done.wait(self.POLL_S):
            self.failed = self._failure()
            if self.failed:
                self.kill()  # rank 0's next collective fails instead of waiting forever
                return

    def _running(self) -> bool:
        return any(proc.poll() is None for proc in self.procs)

    def _failure(self) -> tuple[int, int] | None:
        codes = [proc.poll() for proc in self.procs]
        return next(((rank, code) for rank, code in enumerate(codes, 1) if code), None)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def first_failure(self, wait_s: float = 30.0) -> tuple[int, int] | None:
        """(rank, status) of a child that failed, waiting up to `wait_s` for the children to
        exit: rank 0 sees a failing peer (gloo: "Connection closed by peer") while it is still
        tearing down, seconds before its exit status exists. (A child that waits on rank 0's
        collective costs the whole wait, then is killed.)"""
        deadline = time.monotonic() + wait_s
        while self.failed is None and self._running() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.failed or self._failure()

    def close(self) -> None:
        """End of the job: no child rank may outlive it (one waiting on a dead rank 0 would)."""
        self._done.set()
        self.kill()


@contextmanager
def watched_child_ranks() -> Iterator[ChildRanks]:
    """Lightning's observer is replaced by a `ChildRanks` for the duration of one job."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    ranks = ChildRanks()
    saved = subprocess_script._launch_process_observer
    subprocess_script._launch_process_observer = ranks.watch
    try:
        yield ranks
    except Exception as err:
        failed = ranks.first_failure()
        if failed is None:
            raise
        rank, code = failed  # rank 0's error may only be the dead peer: name both
        rank0 = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # not `from err`: failed.json takes the root cause's line; the traceback keeps both
        message = f"rank {rank} exited with status {code} (its error is above); rank 0: {rank0}"
        raise RuntimeError(message)  # noqa: B904
    finally:
        subprocess_script._launch_process_observer = saved
        ranks.close()


@contextmanager
def job_scope() -> Iterator[None]:
    """One Hydra job = one set of ranks. While the job runs, child ranks are launched with this
    job's own overrides (`hydra.overrides.task`) into this job's output dir and watched by
    `ChildRanks`; afterwards argv, the launch variables and the process group are as before,
    and no child rank is left, so the next job of a sweep starts its own ranks on a fresh port."""
    saved_argv = list(sys.argv)
    saved_env = {key: os.environ.get(key) for key in LAUNCH_ENV}
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    saved_run_dir = hydra.run.dir if hydra is not None else None
    if hydra is not None:
        sys.argv = [saved_argv[0], *hydra.overrides.task, *CHILD_OVERRIDES]
        _set_run_dir(hydra, hydra.runtime.output_dir)  # Lightning appends hydra.run.dir=<this>
    try:
        with watched_child_ranks():
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
