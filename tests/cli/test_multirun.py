"""Hydra multirun: one dir per job, loggers kept apart, and a failed job loses nobody's results."""

import json
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from lm_lab.cli.entry import guarded
from lm_lab.report.__main__ import build_report
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.io import FAILED_FILE

SHORT = (
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)


def fail() -> None:
    raise ConfigError("model.d_model=-1: must be positive")


def set_mode(compose, tmp_path: Path, mode: RunMode) -> None:
    """Make HydraConfig look like train.py's in `mode`, with the job dir under tmp_path."""
    compose()
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = mode
        hydra_cfg.runtime.output_dir = str(tmp_path / "job")


def test_single_run_errors_still_exit_non_zero(compose, tmp_path, capsys):
    set_mode(compose, tmp_path, RunMode.RUN)
    with pytest.raises(SystemExit) as exit_info:
        guarded(fail)
    assert exit_info.value.code == 2
    assert "model.d_model=-1" in capsys.readouterr().err


def test_multirun_job_error_is_written_and_returns_none(compose, tmp_path):
    set_mode(compose, tmp_path, RunMode.MULTIRUN)
    assert guarded(fail) is None
    failure = json.loads((tmp_path / "job" / FAILED_FILE).read_text())
    assert failure["error"] == "model.d_model=-1: must be positive"
    assert "Traceback" in failure["traceback"]


def test_multirun_failed_job_keeps_the_others_and_reports_them(train_cli, tmp_path):
    sweep_dir = tmp_path / "multirun"
    done = train_cli(
        "-m", "model.dropout=2.0,0.1", *SHORT, f"hydra.sweep.dir={sweep_dir}"
    )  # job 0 fails first: nn.Dropout rejects p=2
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dropout" in json.loads((sweep_dir / "0" / FAILED_FILE).read_text())["error"]
    assert (sweep_dir / "1" / "metrics.json").is_file()
    rows = (sweep_dir / "1" / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 2  # its own CSV logger, in its own dir
    jobs = build_report([sweep_dir], tmp_path / "report")
    assert [(job.overrides["model.dropout"], job.error is None) for job in jobs] == [
        ("2.0", False),
        ("0.1", True),
    ]
