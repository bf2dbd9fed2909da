"""`run(cfg)` behind train.py: check the config, lock the run dir, then fit and test.

The checks need Hydra, OmegaConf and torch (checkpoints) only; Lightning, torchmetrics and the
model code (~5 s of imports) load with `lm_lab.fit` once the config is known to be good, so a
bad value is answered in about two seconds instead of eight (pinned by tests/cli/
test_early_errors.py and the import contract in pyproject.toml)."""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from omegaconf import DictConfig

from lm_lab.cli.launch import job_scope
from lm_lab.cli.resume import resume_config
from lm_lab.cli.run_lock import run_dir_lock
from lm_lab.cli.validate import validate_config
from lm_lab.hf.configure import use_pretrained


def optimized_value(cfg: DictConfig, result: dict[str, Any]) -> float | None:
    """What sweepers (Optuna, W&B) optimize: `optimized_metric`, at its best when it is the
    monitored metric, else its final value (e.g. test/acc of the best checkpoint)."""
    name = cfg.get("optimized_metric")
    best = result.get("best") or {}
    return best["value"] if best.get("metric") == name else result["metrics"].get(name)


def run_job(cfg: DictConfig) -> float | None:
    """train.py's job: `run` with this job's DDP ranks scoped to it, even under -m (the scope
    patches Lightning's launcher, so it loads Lightning: it opens after the checks and the lock)."""
    return optimized_value(cfg, run(cfg, scope=job_scope))


def run(
    cfg: DictConfig, scope: Callable[[], AbstractContextManager[Any]] = nullcontext
) -> dict[str, Any]:
    """Fit, then test the best checkpoint; writes <run dir>/metrics.json and returns its content:
    the last `metrics`, the `best` validation value of the monitored metric, counts, time.
    Bad values fail here, before any data is read; one process at a time writes the run dir
    (a busy one is refused before Lightning loads too)."""
    cfg = checked_config(cfg)
    with run_dir_lock(cfg.paths.output_dir), scope():
        from lm_lab import fit  # Lightning and the model code, now that the config is good

        return fit.fit_and_test(cfg)


def checked_config(cfg: DictConfig) -> DictConfig:
    """The config to run, every value checked (checkpoints read, no data)."""
    cfg = resume_config(cfg)  # resume=<run dir>: that run's config and its last.ckpt
    use_pretrained(cfg)  # init_from=<hf dir>: its model config and tokenizer replace the run's
    validate_config(cfg)
    return cfg
