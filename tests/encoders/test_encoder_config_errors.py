"""Bad model settings fail at construction with the config key to fix."""

import pytest

from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.transformer import TransformerEncoder


@pytest.mark.parametrize("encoder", [TransformerEncoder, HybridEncoder])
@pytest.mark.parametrize("n_heads", [5, 0])
def test_heads_must_divide_d_model(encoder, n_heads):
    with pytest.raises(ValueError, match="model.n_heads"):
        encoder(d_model=32, n_heads=n_heads)


def test_rope_needs_an_even_head_size():
    with pytest.raises(ValueError, match="model.n_heads"):
        TransformerEncoder(d_model=36, n_heads=4, positions="rope")


@pytest.mark.parametrize("pattern", ["LX", "", "la"])
def test_hybrid_pattern_letters_are_checked(pattern):
    with pytest.raises(ValueError, match="model.pattern"):
        HybridEncoder(d_model=32, pattern=pattern)


@pytest.mark.parametrize("encoder", [TransformerEncoder, HybridEncoder])
def test_unknown_positions_are_rejected(encoder):
    with pytest.raises(ValueError, match="model.positions"):
        encoder(d_model=32, positions="alibi")
