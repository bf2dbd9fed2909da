"""The optimizer and schedule every task shares, pinned by hand: lr at given steps (warmup,
cosine, floor) and which parameters take weight decay."""

import math
from types import SimpleNamespace

import pytest

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import ByteTokenizer
from lm_lab.finetune.head import Head
from lm_lab.tasks.base import cosine_with_warmup

# warmup 2, 10 steps, floor 0.1: (s + 1) / 3 while warming up, then
# 0.1 + 0.9 * (1 + cos(pi * (s - 2) / 8)) / 2, and 0.1 from step 10 on
COSINE = {
    0: 1 / 3,
    1: 2 / 3,
    2: 1.0,
    4: 0.1 + 0.45 * (1 + math.sqrt(0.5)),  # 0.8682
    6: 0.55,
    10: 0.1,
    12: 0.1,
}


@pytest.mark.parametrize("step", COSINE)
def test_cosine_multiplier_by_hand(step):
    assert cosine_with_warmup(step, 2, 10, 0.1) == pytest.approx(COSINE[step])


def test_configured_scheduler_follows_the_config(compose):
    """lr = 1e-3 x the multiplier above, through configure_optimizers and the task config."""
    cfg = compose(
        "task=classify",
        "task.optimizer.lr=1e-3",
        "task.scheduler.warmup_steps=2",
        "task.scheduler.min_lr_ratio=0.1",
    )
    module = build_module(cfg, ByteTokenizer(), ["a", "b"])
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    seen = {}
    for step in range(13):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for step, multiplier in COSINE.items():
        assert seen[step] == pytest.approx(1e-3 * multiplier), step


# a 1-layer transformer classifier's parameters, by hand: decayed are the weight matrices and
# the token embedding (tied to the LM head); never the biases or the LayerNorm gains
DECAYED = {
    "backbone.embed.weight",
    *(f"backbone.encoder.layers.0.attn.{p}.weight" for p in "qkvo"),
    "backbone.encoder.layers.0.mlp.fc.weight",
    "backbone.encoder.layers.0.mlp.proj.weight",
    "head.weight",
}
NOT_DECAYED = {
    *(f"backbone.encoder.layers.0.{ln}.{w}" for ln in ("ln1", "ln2") for w in ("weight", "bias")),
    *(f"backbone.encoder.layers.0.attn.{p}.bias" for p in "qkvo"),
    "backbone.encoder.layers.0.mlp.fc.bias",
    "backbone.encoder.layers.0.mlp.proj.bias",
    "backbone.norm.weight",
    "backbone.norm.bias",
    "head.bias",
}


def test_weight_decay_groups_by_hand(compose):
    cfg = compose(
        "task=classify",
        "model=transformer",
        "model.n_layers=1",
        "model.positions=rope",
        "task.optimizer.weight_decay=0.25",
        "task.optimizer.fused=false",
    )
    module = build_module(cfg, ByteTokenizer(), ["a", "b"])
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    names = {id(p): n for n, p in module.named_parameters()}
    groups = module.configure_optimizers()["optimizer"].param_groups
    by_decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert by_decay == {0.25: DECAYED, 0.0: NOT_DECAYED}


def test_frozen_parameters_are_left_out_of_the_optimizer(compose):
    cfg = compose("task=classify", "model.n_layers=1")
    module = Head().apply(build_module(cfg, ByteTokenizer(), ["a", "b"]))
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert sorted(p.numel() for g in groups for p in g["params"]) == [2, 2 * 32]  # head b, W
