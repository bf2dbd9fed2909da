"""eval.py's modes besides `test`, by name. eval.py checks the name before the checkpoint and
Lightning load; the mode's module (model code) is imported only when the mode runs."""

from collections.abc import Callable
from typing import Any

MODES = ("icl", "length")


def mode_run(name: str) -> Callable[..., dict[str, Any]]:
    """The mode's `run(module, saved config, data config, cfg)`; `name` is one of MODES."""
    if name == "icl":
        from lm_lab.eval.icl import run
    else:
        from lm_lab.eval.probes import run
    return run
