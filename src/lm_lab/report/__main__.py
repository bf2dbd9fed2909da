"""`python -m lm_lab.report <multirun dir | run dirs...> [--out DIR] [--metric NAME]`.

Writes report.md, jobs.csv, groups.csv and PNG plots to --out (default: <first dir>/report) and
prints the tables. Failed jobs are listed, never dropped.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from lm_lab.report.jobs import Job, find_jobs
from lm_lab.report.plots import plot_by_override, plot_curves, plot_grid
from lm_lab.report.summary import grid_keys, group_rows, job_rows, pivot_rows, varying_keys
from lm_lab.report.write import print_table, write_csv, write_markdown
from lm_lab.utils.errors import ConfigError


def build_report(paths: list[Path], out: Path, metric: str | None = None) -> list[Job]:
    """Reads every job under `paths` and writes the report files to `out`; returns the jobs."""
    jobs = find_jobs(paths)
    writable(out)
    keys = varying_keys(jobs)
    metric = metric or next((job.monitor for job in jobs if job.monitor), None)
    rows, groups = job_rows(jobs, keys), group_rows(jobs, keys)
    plots = plot_curves(jobs, keys, out / "plots")
    pivot = None
    if metric:
        plots += plot_by_override(jobs, keys, metric, out / "plots")
        if grid := grid_keys(keys):
            plots.append(plot_grid(jobs, grid, metric, out / "plots"))
            pivot = (f"{metric}: {grid[0]} x {grid[1]}", pivot_rows(jobs, grid, metric))
    write_csv(rows, out / "jobs.csv")
    write_csv(groups, out / "groups.csv")
    write_markdown(out / "report.md", paths, jobs, rows, groups, plots, pivot)
    console = Console()
    if pivot:
        print_table(*pivot, console)
    print_table("mean ± std over seeds", groups, console)
    print_table("jobs", rows, console)
    for job in jobs:
        if job.error:
            console.print(f"[red]failed[/red] {job.path}: {job.error}")
    console.print(f"report: {out / 'report.md'} ({len(plots)} plots)")
    return jobs


def writable(out: Path) -> None:
    """Creates `out` and writes a probe file in it before anything is drawn: a read-only
    --out fails in one line instead of a traceback after the plots are made."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ConfigError(
            f"--out {out}: cannot write there ({err.strerror}); pass --out <a writable folder>"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_lab.report", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="a multirun dir, or run dirs")
    parser.add_argument("--out", type=Path, help="report folder (default: <first path>/report)")
    parser.add_argument("--metric", help="metric of the by-override plots (default: task.monitor)")
    args = parser.parse_args(argv)
    try:
        build_report(args.paths, args.out or args.paths[0] / "report", args.metric)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
