"""The report over hand-written run dirs: rows, mean +- std over seeds, failed jobs, files."""

import csv
import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from lm_lab.report.__main__ import build_report, main
from lm_lab.report.jobs import find_jobs


def make_job(root: Path, num: int, model: str, seed: int, acc: list[float] | None) -> Path:
    """A job dir as train.py leaves it; acc=None leaves a failed job (failed.json only)."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"model={model}", f"seed={seed}", "trainer.max_epochs=2"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task": {"monitor": "val/acc"}}))
    if acc is None:
        (job / "failed.json").write_text(json.dumps({"error": "data.batch_size=0: must be >= 1"}))
        return job
    metrics = {"val/acc": acc[-1], "test/acc": acc[-1] - 0.1, "val/loss": 1.0}
    result = {"metrics": metrics, "params": {"backbone": 1000 + num}, "wall_time_s": 2.0}
    (job / "metrics.json").write_text(json.dumps(result))
    (job / "csv").mkdir()
    with (job / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss", "val/acc"])
        for epoch, value in enumerate(acc):
            writer.writerow([epoch, 10 * (epoch + 1), 0.5, ""])
            writer.writerow([epoch, 10 * (epoch + 1), "", value])
    return job


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    make_job(root, 0, "transformer", 1, [0.5, 0.7])
    make_job(root, 1, "transformer", 2, [0.6, 0.5])  # best epoch is not the last
    make_job(root, 2, "bilstm", 1, [0.4, 0.6])
    make_job(root, 3, "bilstm", 2, None)
    return root


def test_one_row_per_job_in_job_order_and_failed_kept(multirun):
    jobs = find_jobs([multirun])
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    assert jobs[3].error.startswith("data.batch_size=0")
    assert jobs[1].best_val["val/acc"] == 0.6  # best over the curve, not the final value


def test_the_best_comes_from_metrics_json_when_no_csv_logger_ran(tmp_path):
    """A TensorBoard-only run: the report once gave its last val/acc, 0.481, not its best."""
    job = make_job(tmp_path, 0, "transformer", 1, [0.481])
    (job / "csv" / "metrics.csv").unlink()
    result = json.loads((job / "metrics.json").read_text())
    result["best"] = {"metric": "val/acc", "mode": "max", "value": 0.572, "step": 30}
    (job / "metrics.json").write_text(json.dumps(result))
    (found,) = find_jobs([job])
    assert found.best_val["val/acc"] == 0.572 and found.test["test/acc"] == pytest.approx(0.381)


def test_groups_average_over_seeds_of_finished_jobs(multirun, tmp_path):
    build_report([multirun], tmp_path / "out")
    with (tmp_path / "out" / "groups.csv").open() as f:
        groups = {row["model"]: row for row in csv.DictReader(f)}
    assert "seed" not in next(iter(groups.values()))
    assert int(groups["transformer"]["n"]) == 2
    assert float(groups["transformer"]["val/acc_mean"]) == pytest.approx(0.65)
    assert float(groups["transformer"]["val/acc_std"]) == pytest.approx(0.0707, abs=1e-3)
    assert int(groups["bilstm"]["n"]) == 1  # the failed seed is not averaged in


def test_markdown_lists_failed_job_and_links_existing_plots(multirun, tmp_path):
    build_report([multirun], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "1 failed" in text and "data.batch_size=0" in text
    assert "trainer.max_epochs" not in text  # constant overrides say nothing
    plots = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert {"plots/curves_val_acc.png", "plots/by_model.png"} <= set(plots)
    assert all((tmp_path / "out" / p).stat().st_size > 1000 for p in plots)


def test_run_dirs_can_be_listed_one_by_one(multirun, tmp_path, capsys):
    assert main([str(multirun / "0"), str(multirun / "2"), "--out", str(tmp_path / "o")]) == 0
    with (tmp_path / "o" / "jobs.csv").open() as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["transformer", "bilstm"]
    assert "jobs" in capsys.readouterr().out


def test_a_folder_without_runs_fails_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no .hydra/" in capsys.readouterr().err


def test_a_two_way_grid_gets_a_pivot_table_and_one_plot(tmp_path):
    """experiment x model (as an MQAR grid): one row per experiment, one column per model."""
    root = tmp_path / "grid"
    for num, (exp, model, acc) in enumerate(
        [("mqar", "transformer", 0.9), ("mqar", "bilstm", 0.2), ("mqar_128", "transformer", 0.8)]
    ):
        job = make_job(root, num, model, 1, [acc])
        overrides = [f"experiment={exp}", f"model={model}", "test=False"]
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    default = make_job(tmp_path / "single", 0, "transformer", 1, [0.6])  # a run with no model=
    overrides = ["experiment=mqar_256", "test=false"]  # a multirun job writes test=False
    (default / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    choices = {"hydra": {"runtime": {"choices": {"model": "transformer", "logger": None}}}}
    (default / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    build_report([root, default], tmp_path / "out", metric="test/acc")
    text = (tmp_path / "out" / "report.md").read_text()
    pivot = text.split("## test/acc: experiment x model\n")[1].split("##")[0].strip().splitlines()
    assert pivot[0] == "| experiment | model=transformer | model=bilstm |"
    assert pivot[2] == "| mqar | 0.8 ± 0 | 0.1 ± 0 |"
    assert pivot[3] == "| mqar_128 | 0.7 ± 0 | — |"  # a missing cell stays empty
    assert pivot[4] == "| mqar_256 | 0.5 ± 0 | — |"  # its model read from Hydra's choices
    assert (tmp_path / "out" / "plots" / "grid_experiment_model.png").stat().st_size > 1000


def test_baseline_score_is_a_dashed_line_at_its_mean(tmp_path):
    """Two jobs' baselines 0.8 and 0.9 -> one dashed line at 0.85 over the span given."""
    import matplotlib.pyplot as plt

    from lm_lab.report.jobs import Job
    from lm_lab.report.plots import draw_baseline

    jobs = [
        Job(tmp_path / str(i), {}, test={"test/baseline_acc": v}) for i, v in enumerate([0.8, 0.9])
    ]
    fig, ax = plt.subplots()
    draw_baseline(ax, "test/acc", [((0.0, 2.0), jobs)])
    draw_baseline(ax, "test/loss", [((0.0, 2.0), jobs)])  # no baseline loss: nothing drawn
    (line,) = ax.collections
    (((start, y0), (end, y1)),) = line.get_segments()
    assert (start, end) == (0.0, 2.0) and y0 == y1 == pytest.approx(0.85)
    assert line.get_linestyle()[0][1] is not None  # a dash pattern, not a solid line
    plt.close(fig)


def test_a_truncated_metrics_json_is_a_failed_job_and_the_rest_is_reported(multirun, tmp_path):
    """A run killed while writing metrics.json: the report raised JSONDecodeError."""
    metrics = multirun / "2" / "metrics.json"
    metrics.write_text(metrics.read_text()[:25])
    assert main([str(multirun), "--out", str(tmp_path / "out")]) == 0
    jobs = {job.name: job for job in find_jobs([multirun])}
    assert jobs["2"].error.startswith("metrics.json unreadable, truncated or corrupt (")
    assert [name for name, job in jobs.items() if job.error is None] == ["0", "1"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "2 failed" in text and "metrics.json unreadable" in text
    with (tmp_path / "out" / "jobs.csv").open() as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["transformer"] * 2 + ["bilstm"] * 2


def test_an_unwritable_out_fails_in_one_line(multirun, tmp_path, capsys, monkeypatch):
    """--out in a read-only folder (or under a file): one line, exit 2, nothing half-written."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([str(multirun), "--out", str(blocker / "report")]) == 2
    assert capsys.readouterr().err == (
        f"error: --out {blocker / 'report'}: cannot write there (Not a directory); pass --out "
        "<a writable folder>\n"
    )
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse the probe file as the OS would
        monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    assert main([str(multirun), "--out", str(read_only)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out {read_only}: cannot write there (Permission denied); pass --out "
        "<a writable folder>\n"
    )
    read_only.chmod(0o755)


def denied(*args: object, **kwargs: object) -> None:
    raise PermissionError(errno.EACCES, "Permission denied")
