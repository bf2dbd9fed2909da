"""Sample text from a checkpoint: `python generate.py ckpt_path=<ckpt> prompt="ROMEO:"`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # a checkout runs without install

from omegaconf import DictConfig  # noqa: E402

from lm_lab.cli.entry import hydra_entry  # noqa: E402


@hydra_entry("generate")
def main(cfg: DictConfig) -> None:
    from lm_lab.generate import run

    run(cfg)


if __name__ == "__main__":
    main()
