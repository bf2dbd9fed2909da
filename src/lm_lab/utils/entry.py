"""Wraps entry points so a bad input ends in one line that says what to change, and a failed
job of a multirun is recorded instead of ending the sweep."""

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf.errors import OmegaConfBaseException

from lm_lab.utils.config import write_json
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.loggers import finish_wandb

FAILED_FILE = "failed.json"  # in a failed multirun job's dir; the report lists the job as failed


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """ConfigError and missing/invalid config values exit with status 2 and one line on stderr;
    HYDRA_FULL_ERROR=1 shows the whole traceback instead. Inside a multirun any error is written
    to <job dir>/failed.json and None is returned, so the other jobs still run."""
    try:
        return fn(*args)
    except Exception as err:
        if in_multirun():
            record_failure(err)
            return None
        if not isinstance(err, ConfigError | OmegaConfBaseException):
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(err: Exception) -> None:
    """failed.json holds the one-line error and the traceback; the job's W&B run is closed as
    failed so the next job opens its own."""
    finish_wandb(exit_code=1)
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    cause = err
    while cause.__cause__ is not None:  # Hydra wraps errors raised while instantiating
        cause = cause.__cause__
    trace = "".join(traceback.format_exception(err))
    failure = {"error": _one_line(cause), "type": type(cause).__name__, "traceback": trace}
    write_json(job_dir / FAILED_FILE, failure)
    rank_zero_warn(f"job failed, the sweep goes on: {failure['error']} ({job_dir / FAILED_FILE})")


def _one_line(err: Exception) -> str:
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        msg = str(err).splitlines()[0]
        return f"config key {key}: {msg}" if key else msg
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__
