"""Language-model data built for speed: each split becomes one contiguous token stream, and
batches are cut from it by tensor indexing, a whole batch per DataLoader item (batch_size=None),
with no per-example Python loop.

Training draws random windows nanoGPT-style; evaluation uses fixed windows that score every
token of the stream exactly once. A window never crosses the end of the stream. Streams can be
cached on disk and memory-mapped, so a large corpus is tokenized once and never copied into RAM.
"""

import hashlib
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lm_lab.data.resumable import EpochSampler
from lm_lab.data.sharding import rank_batches
from lm_lab.data.tokenizers import Tokenizer

SEPARATOR = "\n\n"  # between the texts of a multi-text split
IGNORE = -100  # target value that takes no loss

log = logging.getLogger(__name__)


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


def cached_token_stream(
    texts: list[str], tokenizer: Tokenizer, cache_dir: str | Path | None
) -> TokenStream:
    """`token_stream`, stored under cache_dir/streams/ keyed by a hash of the texts and the
    tokenizer, and read back memory-mapped on later runs. cache_dir None disables the cache. An
    unreadable cache file (truncated by a full disk or a kill) is named in a warning and rebuilt."""
    if cache_dir is None:
        return token_stream(texts, tokenizer)
    digest = hashlib.sha256(tokenizer.to_json().encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    path = Path(cache_dir) / "streams" / f"{digest.hexdigest()[:32]}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, mmap=True, weights_only=True)
            return TokenStream(saved["ids"], int(saved["n_chars"]))
        except Exception as err:  # a broken file fails in many ways; rebuilding fixes all
            log.warning(f"{path}: unreadable stream cache ({err}); rebuilding it")
    stream = token_stream(texts, tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")  # concurrent runs never share a half file
    torch.save({"ids": stream.ids, "n_chars": stream.n_chars}, tmp)
    tmp.replace(path)
    return stream


class WindowBatches(Dataset):
    """A stream indexed by a tensor of window starts: one item is a whole batch.

    Item `starts` (B,) gives input_ids = stream[s : s + T] and targets = stream[s + 1 : s + T + 1]
    for each start s, T = block_size.
    """

    def __init__(self, stream: Tensor, block_size: int) -> None:
        self.stream = stream  # (N,)
        self.block_size = block_size
        self._offsets = torch.arange(block_size + 1)  # (T + 1,)

    def __len__(self) -> int:
        return len(self.stream) - self.block_size  # number of valid starts

    def __getitem__(self, starts: Tensor) -> dict[str, Tensor]:
        window = self.stream[starts[:, None] + self._offsets]  # (B, T + 1)
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
    """Fixed, non-overlapping windows that score every target position of the stream once:
    windows start every block_size tokens, and a last one, aligned to the stream end, covers the
    remainder with its already-scored targets set to IGNORE. `max_windows` keeps an evenly spaced
    subset. Item i is batch i, so use DataLoader(..., batch_size=None)."""

    def __init__(
        self, stream: Tensor, block_size: int, batch_size: int, max_windows: int | None = None
    ) -> None:
        n_targets = len(stream) - 1
        if n_targets < block_size:
            raise ValueError(f"stream of {len(stream)} tokens is shorter than one window")
        starts = torch.arange(0, n_targets - block_size + 1, block_size)  # (W,)
        covered = len(starts) * block_size  # targets 1 .. covered are scored
        tail_start = n_targets - block_size
        if covered < n_targets:
            starts = torch.cat([starts, torch.tensor([tail_start])])
        offsets = torch.arange(block_size + 1)
        window = stream[starts[:, None] + offsets]  # (W, T + 1)
        self.inputs, self.targets = window[:, :-1], window[:, 1:].clone()  # (W, T) each
        if covered < n_targets:
            self.targets[-1, : covered - tail_start] = IGNORE  # scored by the previous window
        if max_windows is not None and len(starts) > max_windows:
            keep = torch.linspace(0, len(starts) - 1, max_windows).round().long().unique()
            self.inputs, self.targets = self.inputs[keep], self.targets[keep]
        self.batch_size = batch_size

    @property
    def n_windows(self) -> int:
        return len(self.inputs)

    def __len__(self) -> int:
        return math.ceil(self.n_windows / self.batch_size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return {"input_ids": self.inputs[rows], "targets": self.targets[rows]}  # (B, T) each
