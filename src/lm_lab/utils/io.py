"""Run-dir files: their names and an atomic JSON writer (a leaf: imports nothing of lm_lab)."""

import json
from pathlib import Path
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's own, without torch

METRICS_FILE = "metrics.json"  # written last, atomically: a run dir with it holds a finished run
FAILED_FILE = "failed.json"  # in a failed multirun job's dir; the report lists the job as failed


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically so a killed run never leaves half a metrics file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
