"""Training progress as plain log lines when stdout is not a terminal.

`make train > train.log`, CI, `nohup` and SLURM give stdout to a file: Rich's live bar then
draws nothing until the run ends, and a 46-minute run looked dead between the model summary and
the test table. `progress_bar(every_s)` (conf/callbacks/default.yaml) keeps Rich's bar in a
terminal and otherwise returns `ProgressLog`, which logs through lm_lab.utils.logging (console
and <run dir>/<job>.log) one line every `every_s` seconds:

    train: step 120/7000, epoch 1/5, loss 2.346, 10,234 tokens/s, ETA 0:12:34

It is a Lightning `ProgressBar`, so it replaces the bar instead of running beside it (Lightning
allows one, and adds its tqdm bar when there is none), and Lightning disables it on every rank
but global rank 0.
"""

import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

KEY = "callbacks.progress_bar.every_s"  # the key users set the interval with


def progress_bar(every_s: float = 30.0) -> ProgressBar:
    """Rich's live bar in a terminal; plain progress lines every `every_s` seconds otherwise."""
    return RichProgressBar() if sys.stdout.isatty() else ProgressLog(every_s)


class ProgressLog(ProgressBar):
    """One line (step, epoch, loss, tokens/s, ETA) every `every_s` seconds of training, and the
    validation metrics after each validation. Tokens are the batch's `input_ids` less padding,
    counted on rank 0 and multiplied by the world size (ranks see batches of one shape)."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        number = isinstance(every_s, int | float) and not isinstance(every_s, bool)
        if not number or not 0 <= every_s < math.inf:
            raise ConfigError(f"{KEY}={every_s}: must be a number of seconds >= 0")
        self.every_s = float(every_s)
        self._enabled = True
        self._started = self._last = 0.0  # time.monotonic() at fit start, at the last line
        self._first_step = 0  # global step at fit start (a resumed run does not start at 0)
        self._tokens: Any = 0  # since the last line; a tensor once padding is subtracted

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._last = time.monotonic()
        self._first_step = trainer.global_step
        self._tokens = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        if not self._enabled:
            return
        self._tokens = self._tokens + batch_tokens(batch)
        now = time.monotonic()
        if now - self._last >= self.every_s:
            log.info(self.line(trainer, now))
            self._last, self._tokens = now, 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if "val/" in k}
        shown = ", ".join(f"{k} {_number(v)}" for k, v in sorted(metrics.items()))
        log.info(f"validation at step {trainer.global_step}: {shown or 'no metrics'}")

    def line(self, trainer: L.Trainer, now: float) -> str:
        """The progress line: totals where the trainer knows them, the rest left out."""
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        parts = [
            f"step {step}" + (f"/{total}" if math.isfinite(total) else ""),
            f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else ""),
        ]
        loss = trainer.progress_bar_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {_number(loss)}")
        tokens = int(self._tokens) * trainer.world_size
        if tokens and now > self._last:
            parts.append(f"{tokens / (now - self._last):,.0f} tokens/s")
        done = step - self._first_step
        if done and math.isfinite(total):
            parts.append(f"ETA {_clock((total - step) * (now - self._started) / done)}")
        return "train: " + ", ".join(parts)


def batch_tokens(batch: Any) -> Any:
    """Real tokens of a batch: its `input_ids` (B, T) less the padding its `pad_mask` marks;
    the padding sum stays a tensor so a GPU run does not wait for it at every step."""
    if not isinstance(batch, dict) or "input_ids" not in batch:
        return 0
    pad_mask = batch.get("pad_mask")  # (B, T) True at padding, or absent/None
    tokens = batch["input_ids"].numel()
    return tokens if pad_mask is None else tokens - pad_mask.sum()


def _number(value: float) -> str:
    return f"{float(value):.4g}"


def _clock(seconds: float) -> str:
    """1234.5 -> '0:20:34'."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
