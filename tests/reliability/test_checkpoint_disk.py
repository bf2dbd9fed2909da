"""Disk: a checkpoint is written whole or not at all (a full disk is one line and leaves the
previous checkpoints as they were), and metrics.json says what the run dir costs."""

import errno
import json
import os
import resource
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lm_lab.callbacks.checkpointing import RunCheckpoint
from lm_lab.checkpoint import write_checkpoint
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def full_disk_after(saves: int, monkeypatch) -> None:
    """torch.save works `saves` times, then writes a few bytes and fails as a full disk does."""
    real_save, done = torch.save, []

    def save(obj, f, *args, **kwargs):
        if len(done) >= saves:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise ENOSPC
        done.append(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_leaves_no_partial_checkpoint(lm_run, compose, monkeypatch):
    """Two epochs, each validated: epoch 1 writes best.ckpt and last.ckpt, then the disk is
    full. The run stops in one line naming the file and its run dir; both checkpoints are still
    epoch 1's, whole, and nothing else is in the folder."""
    cfg = compose(*lm_run[1], "trainer.max_epochs=2", "logger=[]", "test=false")
    run_dir = Path(cfg.paths.output_dir)
    full_disk_after(2, monkeypatch)
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    folder = run_dir / "checkpoints"
    message = str(raised.value)
    assert message.startswith(f"{folder}/") and "\n" not in message
    assert message.endswith(
        ": cannot write the checkpoint (No space left on device); nothing partial is left in "
        f"{folder}: free space there or set hydra.run.dir to a disk with room"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    monkeypatch.undo()
    epoch_1 = [
        torch.load(folder / n, weights_only=True)["global_step"] for n in ("best.ckpt", "last.ckpt")
    ]
    assert epoch_1 == [8, 8]  # 64 windows / batch 8 = 8 steps an epoch
    assert not (run_dir / "metrics.json").exists()


def test_write_checkpoint_replaces_the_old_file_only_when_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    write_checkpoint({"step": torch.tensor(1)}, path)
    full_disk_after(0, monkeypatch)
    with pytest.raises(ConfigError, match="No space left on device"):
        write_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": torch.tensor(1)}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_metrics_json_reports_the_run_dirs_size(lm_run):
    """disk_bytes: every file in the run dir but metrics.json itself, checkpoints mostly."""
    run_dir = lm_run[0]
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.name != "metrics.json"]
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["disk_bytes"] == sum(p.stat().st_size for p in files)
    checkpoints = sum(p.stat().st_size for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints < result["disk_bytes"] < checkpoints + 100_000


def test_run_checkpoint_reads_the_state_lightnings_class_saved():
    """Runs whose last.ckpt Lightning's ModelCheckpoint wrote resume with their best score."""
    ours = RunCheckpoint(monitor="val/acc", mode="max")
    theirs = ModelCheckpoint(monitor="val/acc", mode="max")
    assert (
        ours.state_key
        == theirs.state_key
        == (
            "ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max', 'every_n_train_steps': 0, "
            "'every_n_epochs': 1, 'train_time_interval': None}"
        )
    )


def test_metrics_json_reports_peak_rss(lm_run):
    """peak_rss_mb: this process's ru_maxrss (KiB on Linux) in MB when the run ended: at least
    what torch alone takes (> 100 MB), never above the high-water mark read now."""
    result = json.loads((lm_run[0] / "metrics.json").read_text())
    now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 100 < result["peak_rss_mb"] <= now + 0.1


def test_a_second_run_in_one_process_reports_its_own_peak(lm_run, compose, tmp_path):
    """What the process held before a run (600 MB touched, then freed, as an earlier run's
    model would be) is not that run's peak: the mark starts again at each run."""
    block = bytearray(600 * 2**20)
    block[:: 2**12] = b"x" * len(block[:: 2**12])  # every page resident
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = compose(*lm_run[1], "logger=[]", "test=false", f"paths.output_dir={tmp_path}")
    result = train(cfg)
    assert 100 < result["peak_rss_mb"] < before - 300
