"""One logging channel for all of lm_lab, rank-aware: under DDP a line is written once (rank 0)
unless it says it is per rank. Hydra's job logging sends the `lm_lab` logger to the console and
to <run dir>/<job>.log; outside Hydra (tests, notebooks) a plain console handler is attached, as
Lightning does for its own logger. Tables (rich) are rendered to text and logged like any line,
so the run's log file holds everything the terminal showed."""

import io
import logging
import os
from typing import Any

# Lightning's own rank_zero_only object (it re-exports this one and sets its `.rank`), imported
# from the small package so that logging alone does not load Lightning (~4 s): a command can
# check its arguments and answer before it.
from lightning_utilities.core.rank_zero import rank_zero_only
from rich.console import Console

ROOT = "lm_lab"  # every module logs under lm_lab.<module>


class RankedLogger(logging.LoggerAdapter):
    """A module logger that writes on global rank 0 only, or, with `per_rank=True`, on every
    rank with a `[rank N/W]` prefix."""

    def log(self, level: int, msg: object, *args: Any, per_rank: bool = False, **kw: Any) -> None:
        rank = global_rank()
        if not self.isEnabledFor(level) or (rank != 0 and not per_rank):
            return
        if per_rank:
            msg = f"[rank {rank}] {msg}"
        self.logger.log(level, msg, *args, **kw)


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # Lightning's order


def launcher_rank() -> int:
    """The global rank torchrun / SLURM / LSF set, read as Lightning reads it on import."""
    return next((int(os.environ[name]) for name in RANK_VARIABLES if name in os.environ), 0)


def global_rank() -> int:
    """Lightning's global rank (`rank_zero_only.rank`, which its strategies set); before
    Lightning is loaded, the launcher's, stored there as Lightning itself would on import (it
    keeps a rank set before it, read from the same variables). So `@rank_zero_only` functions,
    the log and run.lock work the same on a command's early path, before Lightning loads."""
    if getattr(rank_zero_only, "rank", None) is None:
        rank_zero_only.rank = launcher_rank()
    return rank_zero_only.rank


global_rank()  # on import, as Lightning does: `@rank_zero_only` functions run before it loads


def get_logger(name: str) -> RankedLogger:
    """`log = get_logger(__name__)` at the top of a module."""
    _ensure_handler()
    return RankedLogger(logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}"))


def render(renderable: Any, width: int = 110) -> str:
    """A rich table or tree as plain text, to be logged."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(renderable)
    return buffer.getvalue().rstrip("\n")


def _ensure_handler() -> None:
    """Console output when nothing configured logging; cli.config.apply_extras removes this
    handler once Hydra's own handlers exist, so no line is written twice."""
    logger = logging.getLogger(ROOT)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
