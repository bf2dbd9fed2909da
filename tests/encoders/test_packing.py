"""Packed sequences (`segments`): each sequence of a row gets the logits it gets alone, with every
position encoding and attention variant; encoders that cannot keep them apart refuse."""

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.encoders.backbone import Backbone
from lm_lab.encoders.packing import Packing
from lm_lab.sizing import encoder_config

VOCAB = 50
VARIANTS = {
    "sinusoidal": ["model.positions=sinusoidal"],
    "learned": ["model.positions=learned", "model.max_len=32"],
    "rope_gqa_swiglu": [
        "model.positions=rope",
        "model.n_heads=4",
        "model.n_kv_heads=2",
        "model.mlp=swiglu",
        "model.norm=rmsnorm",
    ],
    "checkpointed": ["model.positions=rope", "model.gradient_checkpointing=true"],
}


def backbone(compose, *overrides: str) -> Backbone:
    cfg = compose("task=sft", *overrides)
    torch.manual_seed(0)
    return Backbone(instantiate(encoder_config(cfg.model)), VOCAB, pad_id=0)


def test_positions_restart_and_attention_stays_inside_each_sequence():
    packing = Packing.of(torch.tensor([[0, 0, 1, 1, 1, -1]]))
    assert packing.positions.tolist() == [[0, 1, 0, 1, 2, 0]]
    allowed = packing.mask[0, 0].int().tolist()
    assert allowed[3] == [0, 0, 1, 1, 0, 0]  # second token of sequence 1: itself and its first
    assert allowed[5] == [0, 0, 0, 0, 0, 1]  # padding sees only itself (no empty row: no NaN)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_packed_sequence_has_its_logits_alone(compose, variant):
    model = backbone(compose, "model.n_layers=2", *VARIANTS[variant])
    model.train(variant == "checkpointed")  # checkpointing recomputes only while training
    a, b, c = (torch.randint(1, VOCAB, (1, n)) for n in (5, 9, 3))
    row = torch.cat([a, b, c, torch.zeros(1, 2, dtype=torch.long)], 1)  # (1, 19), 2 pads
    segments = torch.tensor([[0] * 5 + [1] * 9 + [2] * 3 + [-1] * 2])
    with torch.set_grad_enabled(variant == "checkpointed"):
        packed = model.logits(model(row, causal=True, segments=segments))  # (1, 19, V)
        spans = ((a, 0), (b, 5), (c, 14))
        for ids, at in spans:
            alone = model.logits(model(ids, causal=True))  # (1, n, V)
            assert torch.allclose(packed[:, at : at + ids.shape[1]], alone, atol=1e-5)


def test_without_segments_a_row_is_one_sequence(compose):
    model = backbone(compose).eval()
    a, b = torch.randint(1, VOCAB, (1, 5)), torch.randint(1, VOCAB, (1, 4))
    row = torch.cat([a, b], 1)
    joined = model.logits(model(row, causal=True))[:, 5:]
    assert not torch.allclose(joined, model.logits(model(b, causal=True)), atol=1e-3)


@pytest.mark.parametrize("encoder", ["bilstm", "hybrid", "cnn"])
def test_encoders_that_cannot_keep_sequences_apart_refuse(compose, encoder):
    model = backbone(compose, f"model={encoder}")
    with pytest.raises(ValueError, match="packed sequences .* need a causal attention-only"):
        model(torch.ones(1, 4, dtype=torch.long), causal=True, segments=torch.zeros(1, 4).long())
