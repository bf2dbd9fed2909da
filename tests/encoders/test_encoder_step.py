"""forward_step (generation) equals forward(causal=True): in chunks, and under left padding."""

from functools import partial

import pytest
import torch

from lm_lab.encoders.bilstm import BiLSTMEncoder
from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.transformer import TransformerEncoder

D, T = 32, 12
LLAMA3 = dict(
    type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8,
)
BUILDERS = {
    **{
        f"transformer-{kind}": partial(TransformerEncoder, D, 2, 4, positions=kind)
        for kind in ("rope", "sinusoidal", "learned", "none")
    },
    "transformer-attention-only": partial(TransformerEncoder, D, 2, 1, d_ff=0),  # MQAR's shape
    "transformer-llama": partial(  # the options pretrained families need (lm_lab.hf)
        TransformerEncoder,
        D,
        2,
        4,
        positions="rope",
        norm="rmsnorm",
        mlp="swiglu",
        n_kv_heads=2,
        bias=False,
        qkv_bias=True,
        rope_theta=500.0,
        rope_scaling=LLAMA3,
    ),
    "transformer-neox": partial(
        TransformerEncoder, D, 2, 4, positions="rope", parallel_residual=True, rotary_fraction=0.5
    ),
    "bilstm": partial(BiLSTMEncoder, D, 2, bidirectional=False),
    "hybrid": partial(HybridEncoder, D, "LA", 4, positions="sinusoidal", bidirectional=False),
}


def build(name: str):
    torch.manual_seed(0)
    return BUILDERS[name]().eval()


@pytest.mark.parametrize("name", BUILDERS)
def test_steps_in_chunks_equal_the_causal_forward(name):
    enc = build(name)
    x = torch.randn(3, T, D)
    y1, state = enc.forward_step(x[:, :5], None, 0)  # a prompt of 5
    y2, state = enc.forward_step(x[:, 5:6], state, 5)  # one token
    y3, _ = enc.forward_step(x[:, 6:], state, 6)  # the rest at once
    torch.testing.assert_close(torch.cat([y1, y2, y3], 1), enc(x, None, causal=True))


@pytest.mark.parametrize("name", BUILDERS)
def test_left_padding_leaves_each_row_as_if_alone(name):
    enc = build(name)
    x = torch.randn(3, T, D)
    n_pad = torch.tensor([4, 0, 1])
    garbage = x.clone()
    garbage[0, :4] = 100.0  # pad columns must not reach real ones
    y, state = enc.forward_step(garbage, None, 0, n_pad)
    step, _ = enc.forward_step(x[:, :1], state, T, n_pad)  # one more token per row
    for row, pad in enumerate(n_pad.tolist()):
        alone = torch.cat([x[row : row + 1, pad:], x[row : row + 1, :1]], 1)
        expected = enc(alone, None, causal=True)  # (1, T - pad + 1, D)
        torch.testing.assert_close(y[row, pad:], expected[0, :-1])
        torch.testing.assert_close(step[row, 0], expected[0, -1])
