"""The shakespeare_char experiments: nanoGPT's recipe, and three encoders of one size."""

import pytest
from hydra.utils import instantiate

from lm_lab.encoders.backbone import Backbone
from lm_lab.sizing import encoder_config

EXPERIMENTS = ["shakespeare_char", "shakespeare_char_bilstm", "shakespeare_char_hybrid"]
CHAR_VOCAB = 67  # Tiny Shakespeare's 65 characters + pad + unk


def n_params(cfg) -> int:
    return sum(
        p.numel()
        for p in Backbone(instantiate(encoder_config(cfg.model)), CHAR_VOCAB, 0).parameters()
    )


def test_baby_gpt_follows_nanogpt(compose):
    cfg = compose("experiment=shakespeare_char", tiny=False)
    assert (cfg.model.n_layers, cfg.model.n_heads, cfg.model.d_model) == (4, 4, 128)
    assert (cfg.data.block_size, cfg.data.batch_size, cfg.trainer.max_steps) == (64, 12, 2000)
    assert cfg.task.optimizer.lr == 1e-3 and cfg.task.scheduler.min_lr_ratio == 0.1
    assert (
        cfg.model.dropout == 0
        and cfg.task.causal
        and cfg.tokenizer._target_.endswith("CharTokenizer")
    )
    assert n_params(cfg) == pytest.approx(0.8e6, rel=0.01)


@pytest.mark.parametrize("experiment", EXPERIMENTS[1:])
def test_other_encoders_match_the_baby_gpt_size(experiment, compose):
    baseline = n_params(compose("experiment=shakespeare_char", tiny=False))
    cfg = compose(f"experiment={experiment}", tiny=False)
    assert n_params(cfg) == pytest.approx(baseline, rel=0.02)
    assert cfg.data.block_size == 64 and not cfg.model.bidirectional
