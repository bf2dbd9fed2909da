"""`job_scope`: while a Hydra job runs, Lightning's DDP launcher sees this job's overrides and run
dir; afterwards argv, launch variables and the process group are as before the job."""

import os
import sys

import pytest
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from lm_lab.cli.launch import (
    CHILD_OVERRIDES,
    LAUNCH_ENV,
    external_rank_overrides,
    job_scope,
)


@pytest.fixture
def no_hydra(monkeypatch):
    """A plain Python caller: no Hydra job around it."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)


def test_child_ranks_get_the_jobs_overrides_and_run_dir(compose, monkeypatch, tmp_path):
    compose("model=bilstm", "seed=7")
    hydra = HydraConfig.get()
    with read_write(hydra), open_dict(hydra):
        hydra.runtime.output_dir = str(tmp_path / "multiruns" / "0")  # Hydra sets it per job
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "model=transformer,bilstm", "seed=7"])
    with job_scope():
        assert sys.argv == ["train.py", *hydra.overrides.task, *CHILD_OVERRIDES]
        assert "model=bilstm" in sys.argv and "-m" not in sys.argv
        assert HydraConfig.get().run.dir == str(tmp_path / "multiruns" / "0")
    assert sys.argv == ["train.py", "-m", "model=transformer,bilstm", "seed=7"]


def test_launch_variables_are_restored_for_the_next_job(monkeypatch, no_hydra):
    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # set by the user or the cluster: kept
    with job_scope():
        os.environ.update({key: "0" for key in LAUNCH_ENV})  # what Lightning's launcher does
    assert os.environ["MASTER_ADDR"] == "10.0.0.1"
    assert not any(key in os.environ for key in LAUNCH_ENV if key != "MASTER_ADDR")


def test_process_group_is_destroyed_at_the_end_of_the_job(tmp_path, no_hydra):
    with job_scope():
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
        )
        assert dist.is_initialized()
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("env", "quiet"),
    [({}, False), ({"RANK": "0"}, False), ({"RANK": "3"}, True), ({"SLURM_PROCID": "1"}, True)],
)
def test_ranks_started_by_torchrun_or_slurm_write_only_on_rank_zero(env, quiet, monkeypatch):
    for key in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    overrides = external_rank_overrides()
    assert bool(overrides) == quiet
    assert not quiet or {"hydra.output_subdir=null", *CHILD_OVERRIDES} == set(overrides)
