"""Train any encoder on any task: `python train.py model=bilstm task=generate`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # a checkout runs without install

from omegaconf import DictConfig  # noqa: E402

from lm_lab.cli.entry import hydra_entry  # noqa: E402


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    """Returns the value sweepers (Optuna, W&B) optimize; None when a multirun job failed."""
    from lm_lab.train import run_job

    return run_job(cfg)


if __name__ == "__main__":
    main()
