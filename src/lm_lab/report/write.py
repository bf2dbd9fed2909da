"""Renders report rows: Markdown (report.md), CSV (jobs.csv, groups.csv), a rich terminal table."""

import csv
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lm_lab.report.jobs import Job
from lm_lab.utils.markdown import markdown_table


def fmt(value: Any) -> str:
    """Numbers as a reader wants them: counts with separators, metrics to 4 digits."""
    if value is None:
        return "—"
    if isinstance(value, tuple):
        mean, std = value
        return f"{fmt(mean)} ± {fmt(std)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and value == int(value)):
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Raw numbers; a (mean, std) cell becomes two columns, `<metric>_mean` and `<metric>_std`."""
    flat = [_flatten(row) for row in rows]
    columns = columns_of(flat)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(flat)
    return path


def report_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    return markdown_table(rows, fmt, columns_of(rows)) + "\n"


def write_markdown(
    path: Path,
    sources: list[Path],
    jobs: list[Job],
    job_rows: list[dict[str, Any]],
    group_rows: list[dict[str, Any]],
    plots: list[Path],
    pivot: tuple[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """`pivot` is (title, rows) of a two-way grid, shown first when the jobs form one."""
    failed = [job for job in jobs if job.error]
    parts = [
        "# lm_lab report\n",
        "From: " + ", ".join(f"`{s}`" for s in sources) + "\n",
        f"{len(jobs)} jobs, {len(jobs) - len(failed)} finished, {len(failed)} failed. "
        "Validation metrics are the best over the run; `params` counts the backbone "
        "(embedding + encoder).\n",
        *([f"## {pivot[0]}\n", report_table(pivot[1])] if pivot else []),
        "## Mean ± std over seeds\n",
        report_table(group_rows),
        "## Jobs\n",
        report_table(job_rows),
    ]
    if failed:
        parts += ["## Failed jobs\n", *[f"- `{job.path}`: {job.error}" for job in failed], ""]
    if plots:
        parts += ["## Plots\n", *[f"![{p.stem}]({p.relative_to(path.parent)})\n" for p in plots]]
    path.write_text("\n".join(parts))
    return path


def print_table(title: str, rows: list[dict[str, Any]], console: Console | None = None) -> None:
    table = Table(title=title, header_style="bold")
    columns = columns_of(rows)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        style = "red" if row.get("status") == "failed" else None
        table.add_row(*(fmt(row.get(c)) for c in columns), style=style)
    (console or Console()).print(table)


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Columns in first-seen order, leaving out those no row has a value for (e.g. tokens/s)."""
    columns = dict.fromkeys(k for row in rows for k in row)
    return [c for c in columns if any(row.get(c) is not None for row in rows)]


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, tuple):
            flat[f"{key}_mean"], flat[f"{key}_std"] = value
        else:
            flat[key] = value
    return flat
