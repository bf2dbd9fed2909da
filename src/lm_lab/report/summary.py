"""Jobs -> table rows: one per job, and one per group of jobs that differ only in the seed.

Rows hold raw values (numbers, or (mean, std) pairs for groups); `write` formats them.
"""

import statistics
from typing import Any

from lm_lab.report.jobs import Job

SEED_KEY = "seed"  # the override averaged over in group rows


def varying_keys(jobs: list[Job]) -> list[str]:
    """Overrides whose value differs between jobs (constant ones say nothing in a table)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def metric_names(jobs: list[Job]) -> list[str]:
    """Best validation metrics first, then test metrics, each sorted by name."""
    val = sorted({k for job in jobs for k in job.best_val})
    test = sorted({k for job in jobs for k in job.test})
    return val + test


def job_rows(jobs: list[Job], keys: list[str]) -> list[dict[str, Any]]:
    metrics = metric_names(jobs)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name} | {k: job.overrides.get(k) for k in keys}
        row["params"] = job.params
        row |= {m: job.best_val.get(m, job.test.get(m)) for m in metrics}
        row |= {"wall_time_s": job.wall_time_s, "tokens_per_s": job.tokens_per_s}
        row["status"] = "failed" if job.error else "ok"  # the error is listed under the table
        rows.append(row)
    return rows


def group_rows(jobs: list[Job], keys: list[str]) -> list[dict[str, Any]]:
    """Mean and std over the finished jobs of each group (same overrides except the seed)."""
    group_keys = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple[str | None, ...], list[Job]] = {}
    for job in jobs:
        if job.error is None:
            groups.setdefault(tuple(job.overrides.get(k) for k in group_keys), []).append(job)
    metrics = metric_names(jobs)
    rows = []
    for values, members in groups.items():
        row: dict[str, Any] = dict(zip(group_keys, values, strict=True)) | {"n": len(members)}
        row["params"] = members[0].params
        for metric in [*metrics, "wall_time_s", "tokens_per_s"]:
            row[metric] = mean_std([_value(job, metric) for job in members])
        rows.append(row)
    return rows


def grid_keys(keys: list[str]) -> tuple[str, str] | None:
    """The (row, column) overrides of a two-way grid, e.g. (experiment, model); None otherwise."""
    varying = [k for k in keys if k != SEED_KEY]
    return (varying[0], varying[1]) if len(varying) == 2 else None


def grid_cells(
    jobs: list[Job], grid: tuple[str, str], metric: str
) -> tuple[list[str | None], list[str | None], dict[tuple, tuple[float, float] | None]]:
    """Values of grid[0] and grid[1] in first-seen order, and the metric's (mean, std) over the
    finished jobs of each (row, column) cell; None where no job has it."""
    row_key, col_key = grid
    done = [job for job in jobs if job.error is None]
    rows = list(dict.fromkeys(job.overrides.get(row_key) for job in done))
    cols = list(dict.fromkeys(job.overrides.get(col_key) for job in done))
    values: dict[tuple, list[float | None]] = {}
    for job in done:
        cell = (job.overrides.get(row_key), job.overrides.get(col_key))
        values.setdefault(cell, []).append(_value(job, metric))
    return rows, cols, {(r, c): mean_std(values.get((r, c), [])) for r in rows for c in cols}


def pivot_rows(jobs: list[Job], grid: tuple[str, str], metric: str) -> list[dict[str, Any]]:
    """One row per value of grid[0], one column per value of grid[1]: the metric's mean +- std
    over seeds, so a cell x encoder grid reads at a glance."""
    rows, cols, cells = grid_cells(jobs, grid, metric)
    return [{grid[0]: r} | {f"{grid[1]}={c}": cells[r, c] for c in cols} for r in rows]


def mean_std(values: list[float | None]) -> tuple[float, float] | None:
    """(mean, sample std) of the values present; std is 0 for a single value."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), std


def _value(job: Job, metric: str) -> float | None:
    if metric in ("wall_time_s", "tokens_per_s"):
        return getattr(job, metric)
    return job.best_val.get(metric, job.test.get(metric))
