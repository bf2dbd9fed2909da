"""A signal mid-epoch saves the run; `resume=<run dir>` finishes it exactly like an
uninterrupted run, in the same run dir and the same metrics.csv."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import lm_lab.train
from lm_lab.train import run as train

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
)
TASKS = {
    "generate": ("task=generate",),
    "classify": pytest.param(
        ("task=classify", "trainer.limit_train_batches=4"), marks=pytest.mark.slow
    ),
}


class SignalAt(L.Callback):
    """Sends a real signal to this process at the end of optimizer step `step`."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def interrupt_at(monkeypatch, step: int, signum: int) -> None:
    """The first trainer built gets a SignalAt before every other callback."""
    build = lm_lab.train.build_trainer

    def build_with_signal(cfg):
        trainer = build(cfg)
        trainer.callbacks.insert(0, SignalAt(step, signum))
        monkeypatch.setattr(lm_lab.train, "build_trainer", build)
        return trainer

    monkeypatch.setattr(lm_lab.train, "build_trainer", build_with_signal)


def train_losses(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [(r["step"], r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.parametrize("task_overrides", TASKS.values(), ids=TASKS.keys())
def test_interrupted_then_resumed_run_equals_uninterrupted_run(
    task_overrides, compose, tmp_path, monkeypatch
):
    overrides = (*task_overrides, *RUN)
    whole = compose(*overrides)
    whole.paths.output_dir = str(tmp_path / "whole")
    expected = train(whole)["metrics"]

    cut = compose(*overrides)
    run_dir = Path(cut.paths.output_dir)
    interrupt_at(monkeypatch, step=6, signum=signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        train(cut)
    assert stopped.value.code == 143
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()  # an unfinished run never looks finished

    resumed = train(compose(f"resume={run_dir}", tiny=False))
    assert resumed["run_dir"] == str(run_dir)
    assert resumed["metrics"] == expected
    assert train_losses(run_dir) == train_losses(tmp_path / "whole")  # one logger run, appended


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
