"""A signal mid-epoch saves the run; `resume=<run dir>` finishes it exactly like an
uninterrupted run, in the same run dir and the same metrics.csv: also after a signal during a
validation (which is run again) and after a kill -9 (whose replayed steps are logged once).
A finished run is never resumed."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import lm_lab.fit
from lm_lab.cli.run_lock import LOCK_FILE
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# 4 batches per epoch, 2 epochs; step 6 is mid-way through the second epoch
RUN = (
    "tokenizer=byte",
    "model.n_layers=1",
    "trainer.max_epochs=2",
    "data.train_windows_per_epoch=32",
    "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "model.dropout=0.1",  # the RNG state must resume too
    "task.monitor_mode=max",  # generate: the first validation is the best, so best.ckpt tells
    # whether it counted (classify's val/acc is max already)
)
TASKS = {
    "generate": ("task=generate",),
    "classify": pytest.param(
        ("task=classify", "trainer.limit_train_batches=4"), marks=pytest.mark.slow
    ),
}


class SignalAt(L.Callback):
    """Sends a real signal to this process at the end of optimizer step `step`, or during the
    validation after it (at the end of its first batch) with `in_validation`, or at the end of
    the first test batch with `in_test`."""

    def __init__(
        self, step: int, signum: int, in_validation: bool = False, in_test: bool = False
    ) -> None:
        self.step, self.signum, self.in_validation = step, signum, in_validation
        self.in_test = in_test

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step and not self.in_validation:
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, *args) -> None:
        if trainer.global_step == self.step and self.in_validation and batch_idx == 0:
            os.kill(os.getpid(), self.signum)

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, *args) -> None:
        if self.in_test and batch_idx == 0:
            os.kill(os.getpid(), self.signum)


class CopyLastAt(L.Callback):
    """Keeps a copy of last.ckpt as it is at the start of optimizer step `step`."""

    def __init__(self, step: int, to: Path) -> None:
        self.step, self.to = step, to

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            shutil.copy(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt", self.to)


def with_callbacks(monkeypatch, *callbacks: L.Callback) -> None:
    """The next trainer built gets `callbacks` before every other one."""
    build = lm_lab.fit.build_trainer

    def build_with(cfg):
        trainer = build(cfg)
        trainer.callbacks[:0] = callbacks
        monkeypatch.setattr(lm_lab.fit, "build_trainer", build)
        return trainer

    monkeypatch.setattr(lm_lab.fit, "build_trainer", build_with)


def rows(run_dir: Path, column: str) -> list[tuple[str, str]]:
    """(step, value) of every metrics.csv row that has `column`, in file order."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [(r["step"], r[column]) for r in csv.DictReader(f) if r.get(column)]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def best_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def uninterrupted(module_compose, tmp_path_factory):
    """task -> (run dir, metrics) of the run the interrupted ones must equal, run once."""
    done: dict[str, tuple[Path, dict]] = {}

    def run(task_overrides: tuple[str, ...]) -> tuple[Path, dict]:
        if task_overrides not in done:
            cfg = module_compose(*RUN, *task_overrides)  # a test's own values win
            cfg.paths.output_dir = str(tmp_path_factory.mktemp("whole"))
            done[task_overrides] = Path(cfg.paths.output_dir), train(cfg)["metrics"]
        return done[task_overrides]

    return run


def interrupt(compose, monkeypatch, task_overrides, *callbacks: L.Callback) -> Path:
    """Runs until `callbacks` send a SIGTERM; returns the run dir."""
    cut = compose(*RUN, *task_overrides)
    with_callbacks(monkeypatch, *callbacks)
    with pytest.raises(SystemExit) as stopped:
        train(cut)
    assert stopped.value.code == 143
    run_dir = Path(cut.paths.output_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()  # an unfinished run never looks finished
    return run_dir


def assert_resumes_like(run_dir: Path, whole: tuple[Path, dict], compose) -> None:
    """resume= finishes the run with the uninterrupted run's metrics, metrics.csv rows (each
    step once: one logger run, appended; the test row at the same epoch and step) and best
    checkpoint."""
    resumed = train(compose(f"resume={run_dir}", tiny=False))
    assert resumed["run_dir"] == str(run_dir)
    assert resumed["metrics"] == whole[1]
    for column in ("train/loss", "val/loss", "test/loss"):
        assert rows(run_dir, column) == rows(whole[0], column)
    assert logged_test_row(run_dir) == logged_test_row(whole[0])
    assert best_step(run_dir) == best_step(whole[0])


def logged_test_row(run_dir: Path) -> tuple[str, str]:
    """(epoch, step) of metrics.csv's one test row."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        (row,) = [r for r in csv.DictReader(f) if r.get("test/loss")]
    return row["epoch"], row["step"]


@pytest.mark.parametrize("task_overrides", TASKS.values(), ids=TASKS.keys())
def test_interrupted_then_resumed_run_equals_uninterrupted_run(
    task_overrides, uninterrupted, compose, monkeypatch
):
    whole = uninterrupted(task_overrides)
    run_dir = interrupt(compose, monkeypatch, task_overrides, SignalAt(6, signal.SIGTERM))
    assert_resumes_like(run_dir, whole, compose)


def test_sigterm_during_validation_reruns_that_validation(uninterrupted, compose, monkeypatch):
    """Stopped after the first batch of the epoch-end validation at step 4 (the best one): on
    resume it runs again, so its metrics.csv row is there and it still picks best.ckpt."""
    whole = uninterrupted(TASKS["generate"])
    assert best_step(whole[0]) == 4  # the validation interrupted below
    signal_in_val = SignalAt(4, signal.SIGTERM, in_validation=True)
    run_dir = interrupt(compose, monkeypatch, TASKS["generate"], signal_in_val)
    assert_resumes_like(run_dir, whole, compose)


@pytest.mark.parametrize("epochs", [2, 1])
def test_sigterm_during_the_test_then_resume_reports_the_whole_run(
    epochs, uninterrupted, compose, monkeypatch
):
    """Stopped while testing best.ckpt: last.ckpt is final, so the resumed fit has nothing left
    to train; the fit's metrics (val, train, lr) come back from the checkpoint, and the test
    runs again and is logged at the uninterrupted run's epoch and step."""
    task = (*TASKS["generate"], f"trainer.max_epochs={epochs}")
    whole = uninterrupted(task)
    assert {"val/loss", "train/loss", "test/loss"} <= set(whole[1])
    run_dir = interrupt(compose, monkeypatch, task, SignalAt(-1, signal.SIGTERM, in_test=True))
    assert logged_test_row(whole[0]) == (str(epochs), str(4 * epochs))  # 4 batches an epoch
    assert_resumes_like(run_dir, whole, compose)


def test_resume_after_kill_9_logs_each_replayed_step_once(
    uninterrupted, compose, monkeypatch, tmp_path
):
    """A kill -9 at step 6 leaves metrics.csv rows up to step 6, the epoch-end last.ckpt of
    step 4 and a lock file of a dead process; resume replays steps 4.. and logs them once."""
    whole = uninterrupted(TASKS["generate"])
    epoch_end = tmp_path / "step4.ckpt"
    run_dir = interrupt(
        compose,
        monkeypatch,
        TASKS["generate"],
        CopyLastAt(5, epoch_end),
        SignalAt(6, signal.SIGTERM),
    )
    assert ("5", rows(whole[0], "train/loss")[5][1]) in rows(run_dir, "train/loss")
    shutil.copy(epoch_end, run_dir / "checkpoints" / "last.ckpt")  # what a kill -9 leaves
    (run_dir / LOCK_FILE).write_text(f"{socket.gethostname()} {dead_pid()}")
    assert_resumes_like(run_dir, whole, compose)
    assert not (run_dir / LOCK_FILE).exists()  # released at the end


def test_resume_of_a_finished_run_is_refused(uninterrupted, compose, tmp_path):
    whole = uninterrupted(TASKS["generate"])
    metrics = (whole[0] / "metrics.json").read_text()
    csv_rows = (whole[0] / "csv" / "metrics.csv").read_text()
    with pytest.raises(ConfigError, match=r"resume=.*: that run already finished"):
        train(compose(f"resume={whole[0]}", tiny=False))
    assert (whole[0] / "metrics.json").read_text() == metrics
    assert (whole[0] / "csv" / "metrics.csv").read_text() == csv_rows
    assert json.loads(metrics)["run_dir"] == str(whole[0])


@pytest.mark.slow
def test_sigterm_to_train_py_saves_and_exits_143(tmp_path):
    """The real entry point, killed from outside as a scheduler would."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "task=generate"]
    cmd += [
        "tokenizer=byte",
        "model.n_layers=1",
        "model.d_model=32",
        "trainer.max_epochs=1000",
        "extras.print_config=false",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / "tokenizer.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # written just before fitting starts
    time.sleep(5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 143, err[-2000:]
    assert f"resume with: python train.py resume={run_dir}" in err
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()


def test_resume_runs_in_the_run_dir_it_names(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", [f"resume={tmp_path}"], return_hydra_config=True)
        fresh = hydra_compose("train", [], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.run.dir == str(tmp_path)
    assert "/runs/" in fresh.hydra.run.dir  # without resume: a new stamped dir
