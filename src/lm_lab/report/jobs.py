"""One finished (or failed) run dir -> a `Job`: its overrides, counts, metrics and curves.

A run dir is what train.py leaves: `.hydra/overrides.yaml`, `metrics.json` when it finished
(last values, and the best of the monitored metric), `failed.json` when a multirun job failed,
and `csv/metrics.csv` when the CSV logger ran (the curves, and the best of other val/ metrics).
"""

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lm_lab.utils.errors import ConfigError
from lm_lab.utils.io import FAILED_FILE

LOWER_IS_BETTER = ("loss", "ppl", "bpc")  # metric name endings; every other metric is maximized
THROUGHPUT = re.compile(r"tokens?(_per_|/)s(ec)?$")  # e.g. train/tokens_per_s, if a run logs it


@dataclass
class Job:
    """What the report knows about one run; `error` is set for a failed or unfinished one."""

    path: Path
    overrides: dict[str, str]
    monitor: str | None = None
    error: str | None = None
    params: int | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None
    best_val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> (step, v)

    @property
    def name(self) -> str:
        return self.path.name


def lower_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def find_jobs(paths: list[Path]) -> list[Job]:
    """Each path is a run dir (it has .hydra/) or a multirun dir holding numbered job dirs."""
    dirs: list[Path] = []
    for path in paths:
        if (path / ".hydra").is_dir():
            dirs.append(path)
            continue
        found = sorted((p for p in path.glob("*/") if (p / ".hydra").is_dir()), key=_job_order)
        if not found:
            raise ConfigError(f"{path}: neither a run dir nor a multirun dir (no .hydra/ inside)")
        dirs += found
    jobs = [read_job(d) for d in dirs]
    keys = {k for job in jobs for k in job.overrides}
    for job in jobs:  # a run that kept a group's default still says which one it used
        choices = _choices(job.path / ".hydra" / "hydra.yaml")
        job.overrides |= {k: choices[k] for k in keys - set(job.overrides) if choices.get(k)}
    return jobs


def read_job(path: Path) -> Job:
    overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = (o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    job = Job(path, {key: _canonical(value) for key, value in pairs})
    job.monitor = _monitor(path / ".hydra" / "config.yaml")
    if (path / FAILED_FILE).is_file():
        failure, unreadable = read_json(path / FAILED_FILE)
        job.error = unreadable or failure.get("error", "failed")
        return job
    if not (path / "metrics.json").is_file():
        job.error = "no metrics.json (killed, or still running)"
        return job
    result, unreadable = read_json(path / "metrics.json")
    if unreadable:
        job.error = unreadable
        return job
    metrics: dict[str, float] = result.get("metrics", {})
    job.params = (result.get("params") or {}).get("backbone")
    job.wall_time_s = result.get("wall_time_s")
    job.test = {k: v for k, v in metrics.items() if k.startswith("test/")}
    job.curves = read_curves(path / "csv" / "metrics.csv")
    job.best_val = {k: v for k, v in metrics.items() if k.startswith("val/")}
    job.best_val |= {k: best(k, [v for _, v in c]) for k, c in job.curves.items() if c}
    recorded = result.get("best") or {}  # the monitored metric's best, whatever the loggers
    if recorded.get("metric"):
        job.best_val[recorded["metric"]] = recorded["value"]
    job.tokens_per_s = _throughput(result, metrics, path / "csv" / "metrics.csv")
    return job


def read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """A run's JSON object and None, or {} and why it cannot be read: a run killed while the
    file was written (or a full disk) leaves it truncated, and that job is then listed as
    failed while the report covers the others."""
    try:
        content = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return {}, f"{path.name} unreadable, truncated or corrupt ({err})"
    if not isinstance(content, dict):
        return {}, f"{path.name} unreadable: a JSON {type(content).__name__}, not an object"
    return content, None


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """val/* columns of the CSV logger's file as (step, value) points; {} when it is absent."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in _csv_rows(path):
        for key, value in row.items():
            if key.startswith("val/") and value not in ("", None):
                curves.setdefault(key, []).append((int(float(row["step"])), float(value)))
    return curves


def best(metric: str, values: list[float]) -> float:
    return min(values) if lower_is_better(metric) else max(values)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _throughput(result: dict[str, Any], metrics: dict[str, float], csv_path: Path) -> float | None:
    """Tokens per second wherever the run logged it: metrics.json or the CSV logger (last value)."""
    for source in (metrics, result):
        for key, value in source.items():
            if THROUGHPUT.search(key) and isinstance(value, int | float):
                return float(value)
    values = [
        v for row in _csv_rows(csv_path) for k, v in row.items() if THROUGHPUT.search(k) and v
    ]
    return float(values[-1]) if values else None


def _monitor(config_path: Path) -> str | None:
    """The metric the run selected checkpoints by (task.monitor, a literal in every task)."""
    if not config_path.is_file():
        return None
    monitor = ((yaml.safe_load(config_path.read_text()) or {}).get("task") or {}).get("monitor")
    return monitor if isinstance(monitor, str) and "${" not in monitor else None


def _canonical(value: str) -> str:
    """A multirun job records `x=False` where a single run was given `x=false`: one value."""
    return value.lower() if value.lower() in ("true", "false") else value


def _choices(path: Path) -> dict[str, str]:
    """Config group -> option the run used (Hydra's runtime.choices), {} when unknown."""
    if not path.is_file():
        return {}
    hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
    return {k: v for k, v in ((hydra.get("runtime") or {}).get("choices") or {}).items() if v}


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)
