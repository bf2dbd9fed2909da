"""hparams_search=optuna: trials run as multirun jobs and Optuna gets the optimized metric."""

import json

import optuna
import pytest
import yaml

SHORT = (
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)


def study(train_cli, sweep_dir, storage, n_trials: int):
    return train_cli(
        "hparams_search=optuna",
        f"hydra.sweeper.n_trials={n_trials}",
        "model.d_model=choice(32, 48)",  # the search space, made tiny (CLI values would fix it)
        "model.dropout=interval(0.0, 0.2)",
        f"hydra.sweeper.storage=sqlite:///{storage}",
        f"hydra.sweep.dir={sweep_dir}",
        *SHORT,
    )


@pytest.mark.slow
def test_optuna_runs_two_trials_and_records_the_best_metric(train_cli, tmp_path):
    sweep_dir = tmp_path / "optuna"
    storage = tmp_path / "study.db"
    done = study(train_cli, sweep_dir, storage, n_trials=2)
    assert done.returncode == 0, done.stderr[-2000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    trials = [json.loads((sweep_dir / j / "metrics.json").read_text()) for j in ("0", "1")]
    assert best["best_value"] == max(t["best"]["value"] for t in trials)  # best val/acc, maximized
    assert set(best["best_params"]) == {"task.optimizer.lr", "model.d_model", "model.dropout"}
    resumed = study(train_cli, tmp_path / "again", storage, n_trials=1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    loaded = optuna.load_study(study_name="lm_lab_classify", storage=f"sqlite:///{storage}")
    assert len(loaded.trials) == 3  # the second call added to the stored study
