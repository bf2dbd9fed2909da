"""sweep.yaml: every parameter is a real Hydra override, and the agent's command trains."""

import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SWEEP = yaml.safe_load((ROOT / "sweep.yaml").read_text())
GROUPS = {"model", "task", "data", "tokenizer", "trainer", "logger"}  # config groups, not keys


def sweep_values(spec: dict) -> list:
    """The values a parameter may take, or the two ends of its distribution."""
    return spec["values"] if "values" in spec else [spec["min"], spec["max"]]


CASES = [(name, v) for name, spec in SWEEP["parameters"].items() for v in sweep_values(spec)]


@pytest.mark.parametrize(("name", "value"), CASES)
def test_every_parameter_value_composes_as_an_override(name, value, compose):
    cfg = compose(f"{name}={value}")
    if name in GROUPS:
        assert cfg[name]._target_  # the group option exists and builds something
    else:
        assert OmegaConf.select(cfg, name) == value


def test_metric_is_what_the_default_task_monitors(compose):
    assert SWEEP["metric"]["name"] == compose().task.monitor


def agent_command(sweep: dict) -> list[str]:
    """The command `wandb agent` would run, with the first value of every parameter."""
    args = [f"{n}={sweep_values(spec)[0]}" for n, spec in sweep["parameters"].items()]
    macros = {"${interpreter}": [sys.executable], "${program}": [sweep["program"]]}
    macros |= {"${env}": [], "${args_no_hyphens}": args}
    return [part for item in sweep["command"] for part in macros.get(item, [item])]


@pytest.mark.slow
def test_agent_command_trains_with_fast_dev_run(train_cli, tmp_path):
    command = agent_command(SWEEP)
    assert command[:2] == [sys.executable, "train.py"]
    wandb_home = {f"WANDB_{d}_DIR": str(tmp_path / d) for d in ("CACHE", "CONFIG", "DATA")}
    done = train_cli(
        *command[2:], "debug=fast_dev_run", env={"WANDB_MODE": "offline", **wandb_home}
    )
    assert done.returncode == 0, done.stderr[-2000:]
