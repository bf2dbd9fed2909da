"""Faults cost nothing: SIGINT saves and exits 130, a NaN loss stops at its step and keeps the
last good checkpoint, the same seed gives the same metrics, and data counts are reported."""

import json
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

import lm_lab.fit
from lm_lab.callbacks.finite_loss import TrainingDiverged
from lm_lab.train import run as train

# mirrors test_resume.RUN: 4 batches per epoch (test module basenames must stay unique)
SHORT = (
    "task=generate",
    "tokenizer=byte",
    "model.n_layers=1",
    "trainer.max_epochs=2",
    "data.train_windows_per_epoch=32",
    "trainer.num_sanity_val_steps=0",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
)


def add_callback(monkeypatch, callback: L.Callback) -> None:
    """The next trainer built gets `callback` before every other one."""
    build = lm_lab.fit.build_trainer

    def build_with(cfg):
        trainer = build(cfg)
        trainer.callbacks.insert(0, callback)
        return trainer

    monkeypatch.setattr(lm_lab.fit, "build_trainer", build_with)


class At(L.Callback):
    """Calls `action(trainer, module)` at the start of optimizer step `step`."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer, module, *args) -> None:
        if trainer.global_step == self.step:
            self.action(trainer, module)


def test_sigint_saves_and_exits_130(compose, monkeypatch, capsys):
    cfg = compose(*SHORT)
    add_callback(monkeypatch, At(2, lambda *_: signal.raise_signal(signal.SIGINT)))
    # a terminal's handler, also where a shell started the tests in the background (SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stopped:
            train(cfg)
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer)
    assert stopped.value.code == 130
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # the batch under way when Ctrl-C came was finished and saved
    err = capsys.readouterr().err
    assert f"resume with: python train.py resume={cfg.paths.output_dir}" in err
    assert handler_after is signal.default_int_handler  # handler given back


def poison(trainer, module) -> None:
    with torch.no_grad():
        module.backbone.embed.weight.fill_(float("nan"))


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(compose, monkeypatch):
    cfg = compose(*SHORT)
    add_callback(monkeypatch, At(6, poison))  # second epoch; epoch 1 ended with a checkpoint
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingDiverged, match=rf"train/loss=nan at step 7 .*checkpoint: {last}"):
        train(cfg)
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 4
    assert all(torch.isfinite(p).all() for p in saved["state_dict"].values())
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_same_seed_same_config_same_metrics(compose, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = compose(*SHORT, "model.dropout=0.1", "trainer.max_epochs=1")
        cfg.paths.output_dir = str(tmp_path / name)
        runs.append(train(cfg)["metrics"])
    assert runs[0] == runs[1]


def test_data_counts_are_printed_and_in_metrics_json(compose, tmp_path, caplog):
    for split, word in (("train", "there"), ("validation", "here")):
        rows = [f"hello {word}", "  ", f"good bye {word}", "x " * 100 + word, ""]
        body = "".join(f'"{text}",{"ab"[i % 2]}\n' for i, text in enumerate(rows))
        (tmp_path / f"{split}.csv").write_text("text,label\n" + body)
    cfg = compose(
        "task=classify",
        "data=csv",
        f"data.root={tmp_path}",
        "tokenizer=char",
        "data.max_length=20",
        "trainer.limit_train_batches=1",
    )
    train(cfg)
    data = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["data"]
    assert data["train/read"] == 5
    assert data["train/dropped_empty_text"] == 2
    assert data["train/examples"] == 3
    assert data["train/truncated"] == 1
    assert data["test/from_validation"] == 1
    assert "train/dropped_empty_text=2, " in caplog.text  # the one-line data report
