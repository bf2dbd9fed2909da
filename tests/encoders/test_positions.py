"""Positional encodings agree with themselves across offsets, as KV-cache generation needs."""

import pytest
import torch

from lm_lab.encoders.positions import LearnedPositions, Rotary, SinusoidalPositions


@pytest.mark.parametrize(
    "make", [lambda: SinusoidalPositions(32), lambda: LearnedPositions(32, 16)]
)
def test_added_positions_at_an_offset_match_the_full_sequence(make):
    pos = make()
    x = torch.randn(2, 12, 32)
    tail = pos(x[:, 4:], offset=4)  # asked first, so the sinusoidal table must grow later
    torch.testing.assert_close(tail, pos(x)[:, 4:])


def test_rope_at_an_offset_matches_the_full_sequence():
    rope = Rotary()
    q, k = torch.randn(2, 4, 12, 8), torch.randn(2, 4, 12, 8)
    q_tail, k_tail = rope(q[:, :, 4:], k[:, :, 4:], offset=4)
    q_full, k_full = rope(q, k)
    torch.testing.assert_close(q_tail, q_full[:, :, 4:])
    torch.testing.assert_close(k_tail, k_full[:, :, 4:])


def test_rope_scores_depend_only_on_relative_position():
    rope = Rotary()
    q, k = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    scores = [qr @ kr.transpose(-1, -2) for qr, kr in (rope(q, k), rope(q, k, offset=7))]
    torch.testing.assert_close(scores[0], scores[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(scores[0], q @ k.transpose(-1, -2))


def test_rope_only_rotates():
    q = torch.randn(1, 2, 5, 8)
    rotated, _ = Rotary()(q, q)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1))


@pytest.mark.parametrize("positions", ["rope", "sinusoidal"])
def test_position_caches_are_not_buffers(positions):
    """DDP broadcasts buffers from rank 0 every step; a cache whose length follows each rank's
    batch would differ between ranks and crash gloo/NCCL (seen with padded classify batches)."""
    from lm_lab.encoders.transformer import TransformerEncoder

    enc = TransformerEncoder(d_model=32, n_layers=1, n_heads=4, positions=positions)
    enc(torch.randn(2, 7, 32))
    assert list(enc.buffers()) == []


def test_rope_frequencies_round_as_transformers_does():
    """1 / base^(2i/d) in fp32, bit for bit: base^(-2i/d) differs by one ulp in 11 of
    SmolLM2's 32 frequencies (base 1e5, head 64), which put 1.1e-4 between its logits and
    transformers' on 8 x 128 tokens (0 with the same rounding)."""
    from lm_lab.encoders.positions import _angles

    expected = 1.0 / 100000.0 ** (torch.arange(0, 64, 2, dtype=torch.int64).float() / 64)
    assert torch.equal(_angles(2, 64, 100000.0, torch.device("cpu"))[1], expected)
