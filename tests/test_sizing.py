"""model.param_budget / model.size: every encoder lands within 5% of the same backbone count."""

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lm_lab.build import load_module
from lm_lab.encoders.backbone import Backbone
from lm_lab.sizing import SIZES, TOLERANCE, sized_encoder_config
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ENCODERS = ["transformer", "bilstm", "hybrid"]
VOCAB = 2000  # the bpe tokenizer's default size


@pytest.mark.parametrize(
    ("override", "budget"),
    [("model.param_budget=3e5", 300_000), ("model.size=small", SIZES["small"])],
)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_is_sized_within_tolerance(encoder, override, budget, compose):
    cfg = compose(f"model={encoder}", override)
    backbone = Backbone(instantiate(sized_encoder_config(cfg.model, VOCAB, 0)), VOCAB, 0)
    count = sum(p.numel() for p in backbone.parameters())  # real weights, not the meta count
    assert abs(count - budget) <= TOLERANCE * budget


def test_unsized_config_is_left_as_written(compose):
    cfg = compose("model=bilstm", "model.d_model=48")
    assert sized_encoder_config(cfg.model, VOCAB, 0).d_model == 48


def test_budget_below_the_embedding_fails_naming_the_key(compose):
    cfg = compose("model=transformer", "model.param_budget=1000")
    with pytest.raises(ConfigError, match="model.param_budget=1000"):
        sized_encoder_config(cfg.model, VOCAB, 0)


def test_unknown_size_preset_fails(compose):
    cfg = compose("model=hybrid", "model.size=huge")
    with pytest.raises(ConfigError, match="model.size='huge'"):
        sized_encoder_config(cfg.model, VOCAB, 0)


def test_run_writes_the_sized_count_and_the_checkpoint_rebuilds_it(compose):
    limits = ("trainer.limit_train_batches=1", "trainer.limit_val_batches=1")
    cfg = compose("model=bilstm", "model.param_budget=2e5", *limits, "trainer.limit_test_batches=1")
    train(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert abs(written["params"]["backbone"] - 200_000) <= TOLERANCE * 200_000
    assert written["params"]["total"] > written["params"]["backbone"]  # + the classifier head
    module, _ = load_module(Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt")
    assert sum(p.numel() for p in module.parameters()) == written["params"]["total"]
