"""Pooling picks the states it says, pinned on a hand-made (B, T, D) tensor."""

import torch

from lm_lab.tasks.pooling import pool

# row 0 right-padded (2 real), row 1 left-padded (2 pads, then 2 real), row 2 unpadded
PAD = torch.tensor([[False, False, True, True], [True, True, False, False], [False] * 4])
H = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 4, 1)  # h[b, t] = 4b + t


def test_cls_is_the_first_real_token_even_after_left_padding():
    assert pool(H, PAD, "cls")[:, 0].tolist() == [0.0, 6.0, 8.0]


def test_last_is_the_last_real_token():
    assert pool(H, PAD, "last")[:, 0].tolist() == [1.0, 7.0, 11.0]


def test_mean_averages_real_tokens_only():
    assert pool(H, PAD, "mean")[:, 0].tolist() == [0.5, 6.5, 9.5]
