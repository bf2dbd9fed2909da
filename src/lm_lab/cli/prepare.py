"""`python -m lm_lab.cli.prepare <overrides>`: the data setup of `train.py <overrides>` without
training: the corpus is tokenized into shards under paths.cache_dir once (e.g. on a login node),
and every rank of the real run only memory-maps them (see docs/corpora.md).

Ctrl-C or SIGTERM (a scheduler's time limit) ends it with one line on stderr and the exit
status 130 / 143: the corpus being built lives in a private folder that is removed on the way
out, so nothing half-written is ever published and the next run simply prepares again."""

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lm_lab.cli.entry import cli
from lm_lab.cli.resolvers import register_resolvers
from lm_lab.utils.errors import ConfigError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised by the SIGINT/SIGTERM handler: a BaseException, so no `except Exception` on the
    way swallows it and every cleanup (`finally`, `except BaseException`) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` while the block runs (SIGTERM would otherwise end
    the process at once, with no cleanup and no word)."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


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
    try:
        with stop_on_signals():
            cli(lambda: prepare(overrides))
    except Interrupted as stop:
        print(
            f"interrupted by {stop}: nothing half-prepared is kept or published; run the same "
            "command again to prepare the corpus",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
