"""The Encoder contract, checked on every encoder: shapes, causality, bidirectionality, padding."""

from functools import partial

import pytest
import torch

from lm_lab.encoders.base import Encoder
from lm_lab.encoders.bilstm import BiLSTMEncoder
from lm_lab.encoders.cnn import CNNEncoder
from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.positions import POSITIONS
from lm_lab.encoders.transformer import TransformerEncoder

D, T = 32, 10
BUILDERS = {
    "transformer": partial(TransformerEncoder, d_model=D, n_layers=2, n_heads=4),
    "bilstm": partial(BiLSTMEncoder, d_model=D, n_layers=2),
    "hybrid": partial(HybridEncoder, d_model=D, pattern="LA", n_heads=4),
    "cnn": partial(CNNEncoder, d_model=D, n_layers=2, kernel_sizes=(1, 2, 3)),
}
CASES = [("transformer", {"positions": kind}) for kind in POSITIONS] + [
    ("bilstm", {}),
    ("hybrid", {}),
    ("hybrid", {"positions": "rope", "pattern": "AL"}),
    ("cnn", {}),
    ("cnn", {"kernel_sizes": (4,)}),  # even width: the non-causal window is off-centre
]
IDS = [f"{name}-{'-'.join(map(str, kwargs.values())) or 'default'}" for name, kwargs in CASES]


def build(name: str, **kwargs) -> Encoder:
    torch.manual_seed(0)
    return BUILDERS[name](**kwargs).eval()


def with_new_future(x: torch.Tensor, t: int) -> torch.Tensor:
    """A copy of x whose positions after t are replaced."""
    y = x.clone()
    y[:, t + 1 :] = torch.randn_like(y[:, t + 1 :])
    return y


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("causal", [False, True])
def test_output_keeps_shape(name, kwargs, causal):
    enc = build(name, **kwargs)
    pad_mask = torch.zeros(3, T, dtype=torch.bool)
    pad_mask[0, 7:] = True
    for mask in (None, pad_mask):
        assert enc(torch.randn(3, T, D), mask, causal=causal).shape == (3, T, D)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_causal_never_looks_ahead(name, kwargs):
    enc = build(name, **kwargs)
    x = torch.randn(2, T, D)
    y = with_new_future(x, 5)
    out_x, out_y = enc(x, causal=True), enc(y, causal=True)
    torch.testing.assert_close(out_x[:, :6], out_y[:, :6], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_non_causal_sees_the_future(name, kwargs):
    enc = build(name, **kwargs)
    x = torch.randn(2, T, D)
    y = with_new_future(x, 5)
    assert not torch.allclose(enc(x)[:, :6], enc(y)[:, :6], atol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_changes_real_positions(name, kwargs, causal):
    enc = build(name, **kwargs)
    n_real = 6
    batch = torch.randn(3, T, D)
    batch[0, n_real:] = 100 * torch.randn(T - n_real, D)  # garbage where sequence 0 is padded
    pad_mask = torch.zeros(3, T, dtype=torch.bool)
    pad_mask[0, n_real:] = True
    pad_mask[2, 3:] = True  # a second, shorter padded row in the same batch
    out = enc(batch, pad_mask, causal=causal)
    alone = enc(batch[:1, :n_real], causal=causal)
    torch.testing.assert_close(out[0, :n_real], alone[0], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["transformer", "hybrid"])
def test_learned_positions_reject_sequences_beyond_max_len(name):
    enc = build(name, positions="learned", max_len=8)
    assert enc.max_len == 8
    enc(torch.randn(1, 8, D))
    with pytest.raises(ValueError, match="model.max_len"):
        enc(torch.randn(1, 9, D))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("transformer", {"positions": "sinusoidal", "max_len": 8}),
        ("transformer", {"positions": "rope", "max_len": 8}),
        ("bilstm", {}),
        ("hybrid", {"max_len": 8}),
    ],
)
def test_unbounded_encoders_accept_any_length(name, kwargs):
    enc = build(name, **kwargs)
    assert enc.max_len is None
    assert enc(torch.randn(1, 12, D)).shape == (1, 12, D)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("causal", [False, True])
def test_fully_padded_row_stays_finite(name, kwargs, causal):
    enc = build(name, **kwargs)
    pad_mask = torch.zeros(2, T, dtype=torch.bool)
    pad_mask[1] = True
    assert torch.isfinite(enc(torch.randn(2, T, D), pad_mask, causal=causal)).all()
