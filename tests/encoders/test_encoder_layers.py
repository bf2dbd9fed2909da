"""Building blocks: names fine-tuning finds, the attention mask, the LSTM's reversal helper."""

import pytest
import torch

from lm_lab.encoders.attention import attention_mask
from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.lstm import LSTMLayer, reverse_within
from lm_lab.encoders.transformer import TransformerEncoder


def test_transformer_exposes_named_linears():
    names = {name for name, _ in TransformerEncoder(d_model=32, n_layers=1).named_modules()}
    expected = {f"layers.0.attn.{p}" for p in "qkvo"} | {"layers.0.mlp.fc", "layers.0.mlp.proj"}
    assert expected <= names


def test_lstm_weights_are_plain_lstm_parameters():
    names = {name for name, _ in LSTMLayer(32).named_parameters()}
    assert {f"{d}.weight_{w}_l0" for d in ("fwd", "bwd") for w in ("ih", "hh")} <= names
    forward_only = {name for name, _ in LSTMLayer(32, bidirectional=False).named_parameters()}
    assert not any(name.startswith("bwd.") for name in forward_only)


def test_hybrid_builds_one_layer_per_letter():
    kinds = [type(layer).__name__ for layer in HybridEncoder(d_model=32, pattern="LAL").layers]
    assert kinds == ["LSTMLayer", "TransformerBlock", "LSTMLayer"]


def test_reverse_within_keeps_padding_in_place():
    x = torch.arange(8.0).view(2, 4, 1)
    lengths = torch.tensor([4, 2])
    assert reverse_within(x, lengths).flatten().tolist() == [3, 2, 1, 0, 5, 4, 6, 7]
    torch.testing.assert_close(reverse_within(reverse_within(x, lengths), lengths), x)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_mask_hides_pad_keys_and_leaves_no_query_without_a_key(causal):
    pad_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    mask = attention_mask(pad_mask, causal)  # (B, 1, T, T)
    assert mask.any(-1).all()  # an empty row would make some SDPA kernels return NaN
    assert not mask[0, 0, :2, 2:].any()  # real queries never see pad keys
