"""`python -m lm_lab.cli.prepare <overrides>`: the data setup of `train.py <overrides>` without
training: the corpus is tokenized into shards under paths.cache_dir once (e.g. on a login node),
and every rank of the real run only memory-maps them (see docs/corpora.md).

Ctrl-C or SIGTERM (a scheduler's time limit), at any moment of the command, ends it with one
line on stderr and the exit status 130 / 143 (`lm_lab.data.preparation.prepare.interruptible`):
the corpus being built lives in a private folder that is removed on the way out, so nothing
half-written is ever published and the next run simply prepares again."""

import argparse
import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lm_lab.cli.entry import cli
from lm_lab.cli.resolvers import register_resolvers
from lm_lab.data.preparation.prepare import interruptible
from lm_lab.utils.errors import ConfigError


def prepare(overrides: list[str]) -> None:
    conf = Path(os.environ.get("PROJECT_ROOT", Path.cwd())) / "conf"
    if not conf.is_dir():
        raise ConfigError(f"{conf}: no conf/ folder; run from the project root")
    with initialize_config_dir(str(conf.resolve()), version_base="1.3"):
        cfg = compose("train", overrides)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.setup("fit")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lm_lab.cli.prepare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("overrides", nargs="*", help="the training run's overrides, key=value")
    overrides = parser.parse_args(sys.argv[1:]).overrides
    register_resolvers()
    with interruptible():
        cli(lambda: prepare(overrides))


if __name__ == "__main__":
    main()
