"""d_ff=0: attention-only blocks, as the recall probes (MQAR) use."""

import pytest
import torch

from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.transformer import TransformerEncoder


def test_zero_d_ff_builds_no_mlp_and_keeps_the_encoder_contract():
    encoder = TransformerEncoder(d_model=16, n_layers=2, n_heads=1, d_ff=0)
    assert all(block.mlp is None for block in encoder.layers)
    assert not any(".mlp." in name for name, _ in encoder.named_parameters())
    assert encoder(torch.randn(2, 5, 16), None, causal=True).shape == (2, 5, 16)


def test_null_d_ff_still_means_four_times_d_model():
    block = TransformerEncoder(d_model=16, n_layers=1).layers[0]
    assert block.mlp.fc.out_features == 64
    assert HybridEncoder(d_model=16, pattern="A", d_ff=0).layers[0].mlp is None


def test_negative_d_ff_fails_fast():
    with pytest.raises(ValueError, match="model.d_ff"):
        TransformerEncoder(d_model=16, d_ff=-1)
