"""A finished tiny LM run shared by the checkpoint tests of a module."""

from pathlib import Path

import pytest

from lm_lab.train import run as train


@pytest.fixture(scope="module")
def lm_run(module_compose, tmp_path_factory) -> tuple[Path, tuple[str, ...]]:
    """A tiny LM run (its dir, with best.ckpt and last.ckpt) and the overrides that trained it
    (without the run dir or logger settings, so a test can start another run like it)."""
    root = tmp_path_factory.mktemp("text")
    (root / "train.txt").write_text("to be or not to be, that is the question\n" * 40)
    (root / "validation.txt").write_text("whether tis nobler in the mind to suffer\n" * 10)
    overrides = ("task=generate", "data=text", f"data.root={root}", "tokenizer=char")
    cfg = module_compose(*overrides, "model.n_layers=1", "logger=[]", "test=false")
    train(cfg)
    return Path(cfg.paths.output_dir), (*overrides, "model.n_layers=1")
