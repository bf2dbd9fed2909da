"""`python train.py resume=<run dir>` continues an interrupted run in its own run dir.

The run's config comes from its last checkpoint (so nothing has to be retyped, and nothing can
silently differ), Lightning restores weights, optimizer, schedule and loop position from it,
`ExactResume` the data position and the RNG, and the CSV logger appends to the same metrics.csv.
Hydra puts the resumed process in that same run dir because conf/hydra/default.yaml sets
`run.dir: ${if_null:${resume},<new dir>}`.
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm_lab.checkpoint import read_meta
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.io import METRICS_FILE

LAST = Path("checkpoints") / "last.ckpt"


def resume_config(cfg: DictConfig) -> DictConfig:
    """`cfg` itself unless cfg.resume names a run dir; then that run's saved config, set to fit
    from its last.ckpt."""
    run_dir = cfg.get("resume")
    if run_dir is None:
        return cfg
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError(
            f"resume={run_dir!r}: resume= takes the run dir to continue, e.g. "
            "resume=logs/generate/runs/<stamp> (the dir that printed 'resume with: ...')"
        )
    if (Path(run_dir) / METRICS_FILE).is_file():
        raise ConfigError(
            f"resume={run_dir}: that run already finished ({METRICS_FILE} is written); "
            "start a new run, with ckpt_path=<its last.ckpt> to train on from its weights"
        )
    ckpt = Path(run_dir) / LAST
    if not ckpt.is_file():
        raise ConfigError(
            f"resume={run_dir}: no {LAST} in it; give the run dir that printed "
            "'resume with: ...', or start a new run"
        )
    _reject_other_overrides(run_dir)
    saved = OmegaConf.create(read_meta(ckpt, name=f"resume={run_dir} ({LAST})").config)
    if Path(saved.paths.output_dir).resolve() != Path(run_dir).resolve():
        raise ConfigError(
            f"resume={run_dir}: the checkpoint was written in {saved.paths.output_dir}; "
            "resume a run in the folder it was started in"
        )
    saved.resume = str(run_dir)
    saved.ckpt_path = str(ckpt)
    return saved


def _reject_other_overrides(run_dir: str) -> None:
    """A resumed run is the same run: a changed setting would make it a different one."""
    if not HydraConfig.initialized():
        return
    others = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    if others:
        raise ConfigError(
            f"resume={run_dir}: a resumed run keeps its own config; drop {' '.join(others)} "
            "(or start a new run with ckpt_path=<its last.ckpt> and the new settings)"
        )
