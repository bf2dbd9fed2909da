"""LM windows: targets are inputs shifted by one, windows never cross the stream's end, and
evaluation scores every token exactly once."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from lm_lab.data.loaders.language_modeling import (
    IGNORE,
    EvalWindows,
    RandomWindows,
    WindowBatches,
    token_stream,
)
from lm_lab.data.preparation.shards import TokenShards
from lm_lab.data.tokenization.tokenizers import ByteTokenizer, CharTokenizer


def test_stream_joins_texts_like_the_joined_string():
    tok = CharTokenizer().fit(["ab\n"])
    stream = token_stream(["ab", "ba", "a"], tok)
    assert stream.ids.tolist() == tok.encode("ab\n\nba\n\na")
    assert stream.n_chars == len("ab\n\nba\n\na") and stream.chars_per_token == 1.0
    assert token_stream(["é"], ByteTokenizer()).chars_per_token == 0.5


def test_random_windows_stay_inside_the_stream_and_shift_by_one():
    stream = torch.arange(50)  # token i has id i, so positions are visible
    block = 8
    loader = DataLoader(
        WindowBatches(stream, block), sampler=RandomWindows(50, block, 16, 2000), batch_size=None
    )
    seen_last = False
    for batch in loader:
        x, y = batch["input_ids"], batch["targets"]
        assert x.shape == y.shape and x.shape[1] == block
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, 0], x[:, 0] + 1)
        assert int(y.max()) <= 49
        seen_last |= bool((y[:, -1] == 49).any())
    assert seen_last  # the last full window is drawn too
    assert len(loader) == 125 and sum(len(b["input_ids"]) for b in loader) == 2000


def test_random_windows_are_reproducible_per_epoch_and_differ_across_epochs():
    def starts(epoch: int, seed: int = 0) -> list:
        sampler = RandomWindows(1000, 16, 4, 12, seed=seed)
        sampler.set_epoch(epoch)
        return [s.tolist() for s in sampler]

    assert starts(0) == starts(0) and starts(0) != starts(1) and starts(0) != starts(0, seed=1)


def test_eval_windows_cover_every_target_once():
    stream = torch.arange(103)  # 102 targets, block 10: 10 full windows + an end-aligned one
    windows = EvalWindows(stream, block_size=10, batch_size=4)
    assert windows.n_windows == 11 and len(windows) == 3
    batches = list(DataLoader(windows, batch_size=None))
    targets = torch.cat([b["targets"] for b in batches])
    inputs = torch.cat([b["input_ids"] for b in batches])
    scored = targets[targets != IGNORE]
    assert sorted(scored.tolist()) == list(range(1, 103))  # each target exactly once
    kept = targets != IGNORE
    assert torch.equal(targets[kept], (inputs + 1)[kept])


def test_eval_windows_cap_is_an_even_spread():
    windows = EvalWindows(torch.arange(1001), block_size=10, batch_size=8, max_windows=5)
    first_inputs = torch.cat([b["input_ids"][:, 0] for b in windows]).tolist()
    assert windows.n_windows == 5 and first_inputs[0] == 0 and first_inputs[-1] == 990


def three_shards() -> TokenShards:
    """Shards of 30, 5 (shorter than a window) and 23 tokens; ids tell shard and position."""
    return TokenShards([np.arange(100, 130), np.arange(200, 205), np.arange(300, 323)])


def test_windows_of_shards_never_cross_a_shard_boundary():
    block = 8
    dataset = WindowBatches(three_shards(), block)
    assert len(dataset) == (30 - 8) + 0 + (23 - 8)  # valid starts of each shard
    batch = dataset[torch.arange(len(dataset))]
    x, y = batch["input_ids"], batch["targets"]
    assert x.dtype == torch.long and torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(x[:, 0], torch.cat([torch.arange(100, 122), torch.arange(300, 315)]))
    assert torch.equal(y[:, -1] // 100, x[:, 0] // 100)  # the last target is in the same shard


def test_eval_windows_score_every_target_of_every_shard_once():
    windows = EvalWindows(three_shards(), block_size=8, batch_size=3)
    batches = list(DataLoader(windows, batch_size=None))
    targets = torch.cat([b["targets"] for b in batches])
    scored = sorted(targets[targets != IGNORE].tolist())
    assert scored == list(range(101, 130)) + list(range(301, 323))  # the short shard is skipped
