"""Rows -> a Markdown table: the one renderer behind the probes' tables and the report's."""

from collections.abc import Callable
from typing import Any


def plain_cell(value: Any) -> str:
    """Floats to 3 decimals, None left blank."""
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def markdown_table(
    rows: list[dict[str, Any]],
    cell: Callable[[Any], str] = plain_cell,
    columns: list[str] | None = None,
) -> str:
    """Columns in the order given, else the first row's keys; one line per row."""
    columns = list(rows[0]) if columns is None else columns
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
