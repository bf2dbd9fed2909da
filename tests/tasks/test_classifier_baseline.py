"""task.baseline in real runs: fitted on the run's training split only, logged beside the
model's metrics (metrics.json, the test table, the report), skipped when off."""

import csv
import json
from pathlib import Path

import pytest

from lm_lab.report.__main__ import build_report
from lm_lab.train import run as train

BASELINE_KEYS = {"val/baseline_acc", "test/baseline_acc", "test/baseline_f1"}


@pytest.fixture
def data(planted_csv: Path) -> tuple[str, str]:
    return "data=csv", f"data.root={planted_csv}"


def test_baseline_is_fitted_on_train_only_and_written_beside_the_model(compose, data):
    """Test texts are identical to a train-fitted baseline but for the planted tokens, so it
    predicts one class for all of them: acc 4/8 and macro F1 (2/3 + 0) / 2. Fitted on test
    texts it would reach 1.0. Validation is train's own texts: 1.0."""
    cfg = compose(*data, "task/baseline=tfidf_lr")
    metrics = train(cfg)["metrics"]
    assert metrics["test/baseline_acc"] == 0.5
    assert metrics["test/baseline_f1"] == pytest.approx(1 / 3)
    assert metrics["val/baseline_acc"] == 1.0
    assert {"test/acc", "test/f1", "val/acc"} <= set(metrics)  # the model's own, beside it
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["metrics"]
    assert set(written) >= BASELINE_KEYS


def test_baseline_null_is_skipped(compose, data):
    cfg = compose(*data, "task.baseline=null")
    metrics = train(cfg)["metrics"]
    assert "test/acc" in metrics
    assert not BASELINE_KEYS & set(metrics)


@pytest.mark.parametrize("debug", ["fast_dev_run", "limit", "overfit", "profiler"])
def test_debug_runs_turn_the_baseline_off(debug, compose):
    assert compose("task/baseline=tfidf_lr", f"debug={debug}").task.baseline is None
    assert compose("task=generate", f"debug={debug}").task.baseline is None


def test_baseline_is_on_by_default():
    """Outside tests (no TINY overrides), a classification run fits it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        cfg = compose("train")
    assert cfg.task.baseline._target_.endswith("TfidfLogisticRegression")
    assert list(cfg.task.baseline.Cs) == [1, 4, 16]


def test_baseline_reaches_the_printed_table_and_the_report(train_cli, data, tmp_path):
    done = train_cli(*data, "task/baseline=tfidf_lr", "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test/baseline_acc" in done.stdout  # Lightning's test table
    run_dir = next((tmp_path / "logs").glob("classify/runs/*"))
    build_report([run_dir], tmp_path / "report")
    with (tmp_path / "report" / "jobs.csv").open() as f:
        row = next(csv.DictReader(f))
    assert float(row["test/baseline_acc"]) == 0.5
    plots = {p.name for p in (tmp_path / "report" / "plots").iterdir()}
    assert "curves_val_acc.png" in plots
    assert "curves_val_baseline_acc.png" not in plots  # logged once: a dashed line, not a curve


@pytest.mark.slow
def test_baseline_under_ddp_gives_the_same_numbers(train_cli, data, tmp_path):
    """2 gloo ranks: rank 0 fits, the others receive its numbers; one metrics.json has them."""
    done = train_cli(*data, "task/baseline=tfidf_lr", "trainer=ddp_sim")
    assert done.returncode == 0, done.stderr[-2000:]
    (written,) = (tmp_path / "logs").glob("classify/runs/*/metrics.json")
    metrics = json.loads(written.read_text())["metrics"]
    assert metrics["test/baseline_acc"] == 0.5
    assert metrics["val/baseline_acc"] == 1.0


def test_a_baseline_name_given_as_a_value_says_how_to_choose_it(compose):
    from lm_lab.build import build_module
    from lm_lab.data.tokenization.tokenizers import CharTokenizer

    cfg = compose("task.baseline=tfidf_lr")
    with pytest.raises(Exception, match="task/baseline=tfidf_lr"):  # Hydra wraps the ValueError
        build_module(cfg, CharTokenizer().fit(["ab"]), ["x", "y"])
