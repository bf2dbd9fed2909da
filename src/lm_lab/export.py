"""`python -m lm_lab.export <checkpoint | run dir | hf dir> <out dir> [--force]`: a Hugging Face
folder that `transformers.AutoModelForCausalLM.from_pretrained(<out dir>)` loads (see
lm_lab.hf.export). A non-empty <out dir> is refused unless --force, which replaces it whole."""

import argparse
import logging
import sys
from pathlib import Path

from lm_lab.hf.export import check_target, export
from lm_lab.hf.folder import is_hf_source
from lm_lab.utils.errors import ConfigError

KEY = "source"  # the argument errors about the model to export name


def checkpoint_of(source: Path) -> Path:
    """A run dir means its best checkpoint (else its last); anything else is used as given."""
    if not (source / "checkpoints").is_dir():
        return source
    for name in ("best.ckpt", "last.ckpt"):
        if (source / "checkpoints" / name).is_file():
            return source / "checkpoints" / name
    raise ConfigError(f"{KEY}={source}: a run dir without checkpoints/best.ckpt or last.ckpt")


def model_path(source: Path, out: Path) -> Path:
    """The checkpoint or folder to load; refused when it is missing, or when writing `out`
    would delete it (`export <run dir> <same run dir>`, or a folder holding it)."""
    if not source.exists() and not is_hf_source(source):
        raise ConfigError(
            f"{KEY}={source}: no such file or folder; pass an lm_lab checkpoint (.ckpt), its "
            "run dir, or a Hugging Face model folder"
        )
    path = checkpoint_of(source)
    out = out.resolve()
    for held in (source, path):
        if held.exists() and held.resolve().is_relative_to(out):
            raise ConfigError(
                f"export: out={out} holds the model being exported ({held}); writing there "
                "would delete it: choose another folder"
            )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_lab.export", description=__doc__)
    parser.add_argument(KEY, type=Path, help="an lm_lab checkpoint or run dir, or a HF folder")
    parser.add_argument("out", type=Path, help="the Hugging Face folder to write")
    parser.add_argument(
        "--force", action="store_true", help="replace <out> even when it holds files"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = model_path(args.source, args.out)
        check_target(args.out, args.force)  # before the model loads, which may take minutes
        # Lightning (~4 s of imports) only once the arguments are known to be good
        from lm_lab.build import load_module

        module, _ = load_module(path, key=KEY)
        export(module, module.run_config, args.out, force=args.force)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
