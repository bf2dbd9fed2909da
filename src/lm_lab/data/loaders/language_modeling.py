"""Language-model data built for speed: each split is a token stream (memory-mapped shards, see
`shards.py`), and batches are cut from it by array indexing, a whole batch per DataLoader item
(batch_size=None), with no per-example Python loop; ids widen to int64 per batch only.

Training draws random windows nanoGPT-style; evaluation uses fixed windows that score every
token of each shard exactly once. A window never crosses the end of a shard.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lm_lab.data.loaders.resumable import EpochSampler
from lm_lab.data.loaders.sharding import rank_batches
from lm_lab.data.preparation.shards import SEPARATOR, TokenShards
from lm_lab.data.tokenization.tokenizers import Tokenizer

IGNORE = -100  # target value that takes no loss


@dataclass
class TokenStream:
    """One split as a single 1-D stream; `n_chars` lets the task turn loss into bits per char."""

    ids: Tensor  # (N,) long
    n_chars: int

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / max(1, len(self.ids))


def token_stream(texts: list[str], tokenizer: Tokenizer) -> TokenStream:
    """All texts joined by SEPARATOR and tokenized once. Texts are encoded one by one (in parallel
    for BPE) and joined with the separator's ids, which equals encoding the joined string for
    char and byte tokenizers, and nearly so for BPE, whose pre-tokenizer splits there anyway."""
    encoded = [tokenizer.encode(texts[0])] if len(texts) == 1 else tokenizer.encode_batch(texts)
    sep = tokenizer.encode(SEPARATOR)
    ids = list(encoded[0]) if encoded else []
    for more in encoded[1:]:
        ids += sep
        ids += more
    n_chars = sum(map(len, texts)) + len(SEPARATOR) * max(0, len(texts) - 1)
    return TokenStream(torch.tensor(ids, dtype=torch.long), n_chars)


class WindowBatches(Dataset):
    """Token shards indexed by a tensor of window starts: one item is a whole batch.

    Starts number the valid windows of every shard laid end to end; start s of a shard gives
    input_ids = shard[s : s + T] and targets = shard[s + 1 : s + T + 1], T = block_size. A window
    never crosses a shard boundary: shards hold hundreds of millions of tokens, so the few
    windows lost there do not matter, and each window is one slice of one memory map.
    """

    def __init__(self, stream: Tensor | TokenShards, block_size: int) -> None:
        self.shards = TokenShards.of(stream)
        self.block_size = block_size
        counts = np.maximum(self.shards.lengths - block_size, 0)  # valid starts per shard
        ends = np.cumsum(counts)
        self._ends = torch.from_numpy(ends)  # (S,) first start past each shard
        self._firsts = torch.from_numpy(ends - counts)  # (S,) first start of each shard

    def __len__(self) -> int:
        return int(self._ends[-1])  # number of valid starts

    def __getitem__(self, starts: Tensor) -> dict[str, Tensor]:
        shard = torch.searchsorted(self._ends, starts, right=True)  # (B,)
        offset = starts - self._firsts[shard]  # (B,) within the shard
        window = self.shards.windows(shard, offset, self.block_size + 1)  # (B, T + 1)
        return {"input_ids": window[:, :-1], "targets": window[:, 1:]}  # (B, T) each


class RandomWindows(EpochSampler):
    """Yields batches of random window starts: `n_windows` per epoch, uniform over every start
    whose window of block_size + 1 tokens fits in the stream. Epoch e draws from a generator
    seeded by (seed, e) (see EpochSampler): reproducible, resumable mid-epoch, yet new windows
    each epoch.

    Data-parallel: every rank draws the same epoch and takes its own share of each global batch
    of batch_size * world_size windows, so ranks never share a draw and the global batches equal
    those of one process with world_size times the batch. n_windows is rounded up to a multiple
    of world_size so that every rank takes the same number of steps (DDP needs it)."""

    def __init__(
        self,
        n_tokens: int,
        block_size: int,
        batch_size: int,
        n_windows: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n_tokens < block_size + 1:
            raise ValueError(f"stream of {n_tokens} tokens is shorter than one window")
        super().__init__(seed)
        self.n_starts = n_tokens - block_size  # starts 0 .. n_tokens - block_size - 1
        self.batch_size = batch_size
        self.n_windows = math.ceil(n_windows / world_size) * world_size  # all ranks
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(self.n_windows / (self.batch_size * self.world_size))

    def order(self, generator: torch.Generator) -> Iterator[Tensor]:
        starts = torch.randint(self.n_starts, (self.n_windows,), generator=generator)  # all ranks
        return rank_batches(starts, self.batch_size, self.rank, self.world_size)


class EvalWindows(Dataset):
    """Fixed, non-overlapping windows that score every target position of each shard once:
    windows start every block_size tokens, and a last one, aligned to the shard end, covers the
    remainder with its already-scored targets set to IGNORE. `max_windows` keeps an evenly spaced
    subset. Only the window starts are stored; tokens are read per batch. Item i is batch i, so
    use DataLoader(..., batch_size=None)."""

    def __init__(
        self,
        stream: Tensor | TokenShards,
        block_size: int,
        batch_size: int,
        max_windows: int | None = None,
    ) -> None:
        self.shards = TokenShards.of(stream)
        if self.shards.lengths.max() - 1 < block_size:
            raise ValueError(f"stream of {len(self.shards)} tokens is shorter than one window")
        parts = [
            self._shard_windows(s, int(n) - 1, block_size)
            for s, n in enumerate(self.shards.lengths)
        ]
        self.shard, self.start, self.ignore = (
            torch.cat(c) for c in zip(*parts, strict=True)
        )  # (W,)
        if max_windows is not None and len(self.start) > max_windows:
            keep = torch.linspace(0, len(self.start) - 1, max_windows).round().long().unique()
            self.shard, self.start, self.ignore = (
                self.shard[keep],
                self.start[keep],
                self.ignore[keep],
            )
        self.block_size, self.batch_size = block_size, batch_size

    @staticmethod
    def _shard_windows(shard: int, n_targets: int, block_size: int) -> tuple[Tensor, ...]:
        """(shard, start, targets to ignore) of each window of one shard."""
        starts = torch.arange(0, max(0, n_targets - block_size + 1), block_size)  # (w,)
        ignore = torch.zeros_like(starts)
        covered = len(starts) * block_size  # targets 1 .. covered are scored
        if len(starts) and covered < n_targets:
            tail_start = n_targets - block_size
            starts = torch.cat([starts, torch.tensor([tail_start])])
            ignore = torch.cat([ignore, torch.tensor([covered - tail_start])])
        return torch.full_like(starts, shard), starts, ignore

    @property
    def n_windows(self) -> int:
        return len(self.start)

    def __len__(self) -> int:
        return math.ceil(self.n_windows / self.batch_size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        window = self.shards.windows(self.shard[rows], self.start[rows], self.block_size + 1)
        targets = window[:, 1:].clone()  # (B, T)
        scored_before = torch.arange(self.block_size) < self.ignore[rows, None]  # (B, T)
        targets[scored_before] = IGNORE  # scored by the previous window
        return {"input_ids": window[:, :-1], "targets": targets}  # (B, T) each
