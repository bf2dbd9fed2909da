"""eval.py's modes besides `test`, by name. eval.py checks the name, and the settings of the
modes that have a check, before the checkpoint and Lightning load; the mode's module (model
code) is imported only when the mode is asked for."""

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

MODES = ("icl", "length", "sft")


def mode_check(name: str, cfg: DictConfig) -> None:
    """Fail on the mode's own settings (one line) before anything heavy loads."""
    if name == "sft":
        from lm_lab.eval.sft import check_settings

        check_settings(cfg)


def mode_run(name: str) -> Callable[..., dict[str, Any]]:
    """The mode's `run(module, saved config, data config, cfg)`; `name` is one of MODES."""
    if name == "icl":
        from lm_lab.eval.icl import run
    elif name == "sft":
        from lm_lab.eval.sft import run
    else:
        from lm_lab.eval.probes import run
    return run
