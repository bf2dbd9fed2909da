"""`python -m lm_lab.export <checkpoint | run dir | hf dir> <out dir>`: a Hugging Face folder
that `transformers.AutoModelForCausalLM.from_pretrained(<out dir>)` loads (see lm_lab.hf.export)."""

import argparse
import logging
import sys
from pathlib import Path

from lm_lab.build import load_module
from lm_lab.hf.export import export
from lm_lab.utils.errors import ConfigError


def checkpoint_of(source: Path) -> Path:
    """A run dir means its best checkpoint (else its last); anything else is used as given."""
    if not (source / "checkpoints").is_dir():
        return source
    for name in ("best.ckpt", "last.ckpt"):
        if (source / "checkpoints" / name).is_file():
            return source / "checkpoints" / name
    raise ConfigError(f"{source}: a run dir without checkpoints/best.ckpt or last.ckpt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_lab.export", description=__doc__)
    parser.add_argument("source", type=Path, help="an lm_lab checkpoint or run dir, or a HF folder")
    parser.add_argument("out", type=Path, help="the Hugging Face folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        module, _ = load_module(checkpoint_of(args.source))
        export(module, module.run_config, args.out)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
