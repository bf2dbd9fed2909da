"""The Backbone: token ids to (B, T, D), with the state-dict layout checkpoints transfer by."""

import pytest
import torch

from lm_lab.encoders.backbone import Backbone
from lm_lab.encoders.bilstm import BiLSTMEncoder
from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.transformer import TransformerEncoder

VOCAB, PAD, D = 50, 0, 32
ENCODERS = {
    "transformer": lambda: TransformerEncoder(d_model=D, n_layers=2),
    "bilstm": lambda: BiLSTMEncoder(d_model=D, n_layers=2),
    "hybrid": lambda: HybridEncoder(d_model=D),
}


def build(name: str) -> Backbone:
    torch.manual_seed(0)
    return Backbone(ENCODERS[name](), VOCAB, PAD).eval()


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("causal", [False, True])
def test_backbone_maps_ids_to_states(name, causal):
    backbone = build(name)
    ids = torch.randint(1, VOCAB, (3, 9))
    assert backbone.d_model == D
    assert backbone(ids, causal=causal).shape == (3, 9, D)


@pytest.mark.parametrize("name", ENCODERS)
def test_pad_tokens_never_change_real_positions(name):
    backbone = build(name)
    ids = torch.randint(1, VOCAB, (2, 9))
    ids[0, 5:] = PAD
    out = backbone(ids, pad_mask=ids == PAD)
    torch.testing.assert_close(out[0, :5], backbone(ids[:1, :5])[0], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out).all()


def test_state_dict_keys_are_grouped_for_transfer():
    keys = build("transformer").state_dict().keys()
    assert {key.split(".")[0] for key in keys} == {"embed", "encoder", "norm"}
    assert build("transformer").embed.weight[PAD].abs().sum() == 0


def test_pad_row_gets_gradient_only_through_a_tied_head():
    """As the docstring says: the lookup never trains the pad row, a tied output head does."""
    backbone = build("transformer")
    ids = torch.tensor([[3, 4, PAD]])
    h = backbone(ids, pad_mask=ids == PAD)  # (1, 3, D)
    h.sum().backward()  # the lookup alone (a classifier's path)
    assert backbone.embed.weight.grad[PAD].abs().sum() == 0
    backbone.zero_grad()
    logits = backbone(ids, pad_mask=ids == PAD) @ backbone.embed.weight.T  # a LM's tied head
    torch.nn.functional.cross_entropy(logits[0], torch.tensor([4, 5, 6])).backward()
    assert backbone.embed.weight.grad[PAD].abs().sum() > 0
