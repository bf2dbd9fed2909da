"""Wraps entry points so a bad input ends in one line that says what to change."""

import os
import sys
from collections.abc import Callable
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from lm_lab.utils.errors import ConfigError


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """ConfigError and missing/invalid config values exit with status 2 and one line on stderr;
    HYDRA_FULL_ERROR=1 shows the whole traceback instead."""
    try:
        return fn(*args)
    except (ConfigError, OmegaConfBaseException) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)


def _one_line(err: Exception) -> str:
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        msg = str(err).splitlines()[0]
        return f"config key {key}: {msg}" if key else msg
    return str(err).splitlines()[0]
