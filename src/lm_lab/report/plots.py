"""PNG plots of a report: validation curves per job, and a metric against each override's values.

matplotlib's Agg backend draws without a display, so reports build on servers and in CI.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lm_lab.report.jobs import Job  # noqa: E402
from lm_lab.report.summary import SEED_KEY, grid_cells, mean_std  # noqa: E402

BASELINE = "baseline_"  # prefix of a reference model's scores (task.baseline): val/baseline_acc


def baseline_of(metric: str) -> str:
    """val/acc -> val/baseline_acc: the reference score a model metric is drawn against."""
    stage, _, name = metric.rpartition("/")
    return f"{stage}/{BASELINE}{name}"


def is_baseline(metric: str) -> bool:
    return metric.rpartition("/")[2].startswith(BASELINE)


def job_label(job: Job, keys: list[str]) -> str:
    return ", ".join(f"{k}={job.overrides.get(k)}" for k in keys) or job.name


def plot_curves(jobs: list[Job], keys: list[str], out_dir: Path) -> list[Path]:
    """One PNG per validation metric, one line per job, x = optimizer step; the baseline's score
    (logged once, not a curve) is a dashed line across."""
    metrics = sorted({m for job in jobs for m in job.curves if not is_baseline(m)})
    style = _line_styles(jobs, keys)
    paths = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(7, 4))
        for job in jobs:
            points = job.curves.get(metric)
            if points:
                steps, values = zip(*points, strict=True)
                color, dashes = style[str(job.path)]
                ax.plot(
                    steps,
                    values,
                    color=color,
                    linestyle=dashes,
                    marker="o",
                    markersize=3,
                    label=job_label(job, keys),
                )
        draw_baseline(ax, metric, [(ax.get_xlim(), jobs)])
        ax.set(xlabel="step", ylabel=metric, title=f"{metric} during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        paths.append(_save(fig, out_dir / f"curves_{_slug(metric)}.png"))
    return paths


def plot_by_override(jobs: list[Job], keys: list[str], metric: str, out_dir: Path) -> list[Path]:
    """One PNG per varying override (the seed aside): every job as a dot, mean +- std as a bar."""
    done = [job for job in jobs if job.error is None and metric in _metrics(job)]
    paths = []
    for key in [k for k in keys if k != SEED_KEY]:
        values = list(dict.fromkeys(job.overrides.get(key) for job in done))
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(values) + 2), 4))
        for x, value in enumerate(values):
            ys = [_metrics(job)[metric] for job in done if job.overrides.get(key) == value]
            ax.scatter([x] * len(ys), ys, color="tab:blue", alpha=0.5, s=18)
            mean, std = mean_std(ys)
            ax.errorbar([x], [mean], yerr=[std], color="black", capsize=6, marker="_", ms=20)
        draw_baseline(
            ax, metric, [((x - 0.4, x + 0.4), _at(done, key, v)) for x, v in enumerate(values)]
        )
        ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=20)
        best = " (best over the run)" if metric.startswith("val/") else ""
        ax.set(xlabel=key, ylabel=metric + best, title=f"{metric} by {key} (mean ± std)")
        ax.grid(alpha=0.3, axis="y")
        paths.append(_save(fig, out_dir / f"by_{_slug(key)}.png"))
    return paths


def plot_grid(jobs: list[Job], grid: tuple[str, str], metric: str, out_dir: Path) -> Path:
    """A two-way grid as one PNG: x = grid[0]'s values, one line (mean +- std) per grid[1] value."""
    row_key, col_key = grid
    xs, cols, cells = grid_cells(jobs, grid, metric)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(xs) + 3), 4))
    for col in cols:
        points = [(x, *cells[r, col]) for x, r in enumerate(xs) if cells[r, col] is not None]
        if points:
            x, mean, std = zip(*points, strict=True)
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, label=f"{col_key}={col}")
    done = [job for job in jobs if job.error is None]
    draw_baseline(
        ax, metric, [((x - 0.4, x + 0.4), _at(done, row_key, r)) for x, r in enumerate(xs)]
    )
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=20)
    ax.set(xlabel=row_key, ylabel=metric, title=f"{metric} by {row_key} and {col_key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out_dir / f"grid_{_slug(row_key)}_{_slug(col_key)}.png")


def _line_styles(jobs: list[Job], keys: list[str]) -> dict[str, tuple[str, str]]:
    """One color per group (jobs equal but for the seed), one line style per seed within it."""
    group_keys = [k for k in keys if k != SEED_KEY]
    colors: dict[tuple, str] = {}
    seen: dict[tuple, int] = {}
    styles = {}
    for job in jobs:
        group = tuple(job.overrides.get(k) for k in group_keys)
        colors.setdefault(group, f"C{len(colors) % 10}")
        seen[group] = seen.get(group, -1) + 1
        styles[str(job.path)] = (colors[group], ("-", "--", ":", "-.")[seen[group] % 4])
    return styles


def baseline_mean(jobs: list[Job], metric: str) -> float | None:
    """Mean of the baseline's score for `metric` over the jobs that logged one."""
    found = mean_std([_metrics(job).get(baseline_of(metric)) for job in jobs])
    return None if found is None else found[0]


def draw_baseline(
    ax: plt.Axes, metric: str, spans: list[tuple[tuple[float, float], list[Job]]]
) -> None:
    """A dashed line at the baseline's mean score over each span's jobs (x from, x to)."""
    label = "baseline (task.baseline)"
    for (start, end), members in spans:
        if (value := baseline_mean(members, metric)) is not None:
            ax.hlines(value, start, end, colors="tab:red", linestyles="--", label=label)
            label = None  # one legend entry
    if label is None:
        ax.legend(fontsize=7, loc="best")


def _at(jobs: list[Job], key: str, value: str | None) -> list[Job]:
    return [job for job in jobs if job.overrides.get(key) == value]


def _metrics(job: Job) -> dict[str, float]:
    return job.test | job.best_val


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
