"""logger=wandb: offline without a key, files inside the run dir, one W&B run per job."""

from pathlib import Path

import pytest
import wandb

from lm_lab.train import run as train

SHORT = (
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No API key, and wandb's own cache/config dirs under tmp_path."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    env = {f"WANDB_{d}_DIR": str(tmp_path / "wandb_home" / d) for d in ("CACHE", "CONFIG", "DATA")}
    env["WANDB_SILENT"] = "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize(("key", "offline"), [(None, True), ("0123abcd", False)])
def test_offline_unless_an_api_key_is_set(key, offline, compose, monkeypatch):
    if key is None:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    else:
        monkeypatch.setenv("WANDB_API_KEY", key)
    assert compose("logger=wandb").logger.wandb.offline is offline


def test_offline_run_writes_inside_the_run_dir_with_the_config(wandb_env, compose):
    cfg = compose("logger=wandb", *SHORT)
    train(cfg)
    assert wandb.run is None  # finished, so the next job opens its own run
    # finish() returns once the run is marked done, but the service process writes the .wandb
    # file through a buffer it flushes when it shuts down: read it only after teardown has
    # waited for that (reading earlier failed 4 times in 6 on a busy machine).
    wandb.teardown()
    (run_file,) = offline_runs(Path(cfg.paths.output_dir))
    assert b"optimized_metric" in run_file.read_bytes()  # the resolved config was logged


@pytest.mark.slow
def test_each_multirun_job_is_its_own_wandb_run(wandb_env, train_cli, tmp_path):
    sweep_dir = tmp_path / "multirun"
    done = train_cli(
        "-m", "logger=wandb", "seed=1,2", *SHORT, f"hydra.sweep.dir={sweep_dir}", env=wandb_env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [offline_runs(sweep_dir / job) for job in ("0", "1")]
    assert [len(r) for r in runs] == [1, 1]
    assert runs[0][0].name != runs[1][0].name  # distinct run ids


def test_logger_many_is_csv_tensorboard_and_wandb_in_the_run_dir(compose):
    loggers = compose("logger=many").logger
    assert set(loggers) == {"csv", "tensorboard", "wandb"}
    assert {c.save_dir for c in loggers.values()} == {compose().paths.output_dir}
