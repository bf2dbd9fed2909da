"""The progress line without a terminal: its fields against a hand-made trainer state, the
choice between Rich's bar and the lines, and the interval's one-line error. The run into a
pipe: test_cli_commands.py::test_training_into_a_pipe_logs_a_progress_line_per_interval."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar

from lm_lab.callbacks.progress_log import ProgressLog, batch_tokens, progress_bar
from lm_lab.utils.errors import ConfigError


def trainer_at(step: int, epoch: int) -> SimpleNamespace:
    """The attributes ProgressLog.line reads: 1000 steps over 5 epochs, one rank."""
    return SimpleNamespace(
        global_step=step,
        estimated_stepping_batches=1000,
        max_epochs=5,
        current_epoch=epoch,
        progress_bar_metrics={"train/loss": torch.tensor(2.34567)},
        world_size=2,
    )


def test_the_line_holds_step_epoch_loss_tokens_per_s_and_eta():
    progress = ProgressLog(every_s=30)
    progress._started, progress._last, progress._first_step = 100.0, 220.0, 0
    progress._tokens = 3000  # since the last line, 30 s ago: x 2 ranks = 200 tokens/s
    # 250 steps in 150 s: 750 more take 450 s
    assert progress.line(trainer_at(250, 1), now=250.0) == (
        "train: step 250/1000, epoch 2/5, loss 2.346, 200 tokens/s, ETA 0:07:30"
    )


def test_unknown_totals_are_left_out():
    trainer = trainer_at(0, 0)
    trainer.estimated_stepping_batches, trainer.max_epochs = float("inf"), -1
    trainer.progress_bar_metrics = {}
    assert ProgressLog(every_s=0).line(trainer, now=1.0) == "train: step 0, epoch 1"


def test_tokens_are_input_ids_less_padding():
    ids = torch.zeros(2, 5, dtype=torch.long)  # (B, T)
    pad_mask = torch.tensor([[False] * 5, [False, False, True, True, True]])
    assert int(batch_tokens({"input_ids": ids, "pad_mask": pad_mask})) == 7
    assert batch_tokens({"input_ids": ids, "targets": ids}) == 10  # LM windows: no padding
    assert batch_tokens([ids]) == 0  # not one of lm_lab's batches: no count


def test_rich_in_a_terminal_lines_otherwise(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(every_s=5), RichProgressBar)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    bar = progress_bar(every_s=5)
    assert isinstance(bar, ProgressLog) and bar.every_s == 5.0


@pytest.mark.parametrize("every_s", [-1, float("nan"), "often", True])
def test_a_bad_interval_is_one_config_error(every_s):
    with pytest.raises(ConfigError, match=r"^callbacks.progress_bar.every_s=.*: must be a number"):
        ProgressLog(every_s)
