"""Stopping a run with SIGTERM (a scheduler, `kill`) or SIGINT (Ctrl-C) costs nothing.

Lightning already notes a SIGTERM and stops at the next safe point (the end of a training batch,
after it is logged) by raising SIGTERMException, but it saves nothing and exits with status 0.
`GracefulStop` routes SIGINT to that same handler, and when the exception comes it writes the
whole training state (weights, optimizer, schedule, loop and data position, RNG) to
<run dir>/checkpoints/last.ckpt, prints the command that resumes the run, and makes the process
exit with 128 + the signal number (143 for SIGTERM, 130 for SIGINT). A second Ctrl-C stops at
once, without a checkpoint.

A signal during a validation stops it between two batches; its partial metrics are lost, so the
checkpoint records that validation as not yet run, and `resume=` runs it again from its first
batch (its row in metrics.csv and its say in best.ckpt come back).
"""

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.loops.progress import _BatchProgress
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


def resume_command(run_dir: str | Path) -> str:
    return f"python train.py resume={run_dir}"


class GracefulStop(L.Callback):
    """Checkpoints and exits on SIGINT/SIGTERM (what the checkpoint must hold to resume exactly
    is `lm_lab.callbacks.exact_resume.ExactResume`'s job)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = Path(run_dir)
        self.received: int | None = None
        self._sigint_before: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sigint_before = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.received = signal.SIGINT
        print("SIGINT: stopping after this batch (Ctrl-C again stops at once)", file=sys.stderr)
        lightning_sigterm = signal.getsignal(signal.SIGTERM)
        if callable(lightning_sigterm):
            lightning_sigterm(signum, frame)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The batch `_mark_validation_unstarted` left in flight is the one starting now."""
        total = trainer.fit_loop.epoch_loop.val_loop.batch_progress.total
        if trainer.state.fn == TrainerFn.FITTING and total.started > total.processed:
            total.ready = total.started = total.processed

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, err: Any) -> None:
        self._restore_sigint()
        if not isinstance(err, SIGTERMException):
            return
        signum = self.received or signal.SIGTERM
        path = self.run_dir / "checkpoints" / "last.ckpt"
        if trainer.state.fn == TrainerFn.FITTING:  # while testing, last.ckpt is already final
            if trainer.state.stage == RunningStage.VALIDATING:
                _mark_validation_unstarted(trainer.fit_loop.epoch_loop.val_loop.batch_progress)
            trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            print(
                f"interrupted by {signal.Signals(signum).name} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}); saved {path}; resume with: "
                f"{resume_command(self.run_dir)}",
                file=sys.stderr,
                flush=True,
            )
        err.code = 128 + signum

    def _restore_sigint(self) -> None:
        if self._sigint_before is not None:
            signal.signal(signal.SIGINT, self._sigint_before)
            self._sigint_before = None


def _mark_validation_unstarted(progress: _BatchProgress) -> None:
    """Rolls the validation loop back to its start, with one batch in flight: the state Lightning
    reads on resume as "interrupted mid-validation", which makes it run that validation again
    (from batch 0, since no batch counts as done). Without this, Lightning sees the training
    batch before it as the last thing done and skips the validation for good."""
    done = progress.current.completed
    for counts in (progress.total, progress.current):
        before = counts.completed - done  # batches of earlier validations
        counts.processed = counts.completed = before
        counts.ready = counts.started = before + 1
