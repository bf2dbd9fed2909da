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


def test_last_picks_each_right_padded_row_s_own_last_real_position():
    """Rows of 3, 1 and 5 real tokens, right-padded to 5: positions 2, 0 and 4, not the batch's
    last column (a pad state for the first two rows)."""
    pad_mask = torch.arange(5)[None, :] >= torch.tensor([3, 1, 5])[:, None]  # (3, 5)
    h = torch.arange(3 * 5, dtype=torch.float32).reshape(3, 5, 1)  # h[b, t] = 5b + t
    assert pool(h, pad_mask, "last")[:, 0].tolist() == [2.0, 5.0, 14.0]
