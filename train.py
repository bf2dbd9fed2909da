"""Train any encoder on any task: `python train.py model=bilstm task=generate`."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without `pip install -e .`

from lm_lab.cli.entry import cli, guarded  # noqa: E402
from lm_lab.cli.launch import external_rank_overrides, job_scope  # noqa: E402
from lm_lab.cli.resolvers import register_resolvers  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lm_lab.train import run

    with job_scope():  # DDP ranks of this job get this job's overrides, even under -m
        result = guarded(run, cfg)  # None when a multirun job failed (see <job dir>/failed.json)
    return None if result is None else result["metrics"].get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    sys.argv += external_rank_overrides()  # torchrun / srun ranks > 0 write nothing
    cli(main)
