"""Test a checkpoint with nothing but the checkpoint: `python eval.py ckpt_path=<ckpt>`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # a checkout runs without install

from omegaconf import DictConfig  # noqa: E402

from lm_lab.cli.entry import hydra_entry  # noqa: E402


@hydra_entry("eval")
def main(cfg: DictConfig) -> None:
    from lm_lab.evaluate import run

    run(cfg)


if __name__ == "__main__":
    main()
