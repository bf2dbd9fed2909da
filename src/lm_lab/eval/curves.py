"""Result rows -> a PNG curve, the figure every probe reports beside its Markdown table."""

from pathlib import Path
from typing import Any


def save_curve(
    path: Path, rows: list[dict[str, Any]], x: str, series: tuple[str, ...], xlabel: str
) -> None:
    """One line per series, `<name>_mean` with `<name>_std` as error bars, against `x`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [row[x] for row in rows]
    for name in series:
        means = [row[f"{name}_mean"] for row in rows]
        stds = [row[f"{name}_std"] for row in rows]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
