"""Sample text from a checkpoint: `python generate.py ckpt_path=<ckpt> prompt="ROMEO:"`."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without `pip install -e .`

from lm_lab.cli.entry import guarded  # noqa: E402
from lm_lab.cli.resolvers import register_resolvers  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from lm_lab.generate import run

    guarded(run, cfg)


if __name__ == "__main__":
    main()
