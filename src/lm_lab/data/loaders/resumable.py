"""Training loaders that resume mid-epoch exactly.

A run stopped after k batches of epoch e and resumed from its checkpoint must see the batches the
uninterrupted run would have seen next. Two pieces make that true without replaying data:
- `EpochSampler`: the order of epoch e is a pure function of (seed, e), so no RNG state needs
  saving, and `skip_next(n)` drops the first n items of the next pass;
- `ResumableLoader`: a DataLoader with `state_dict`/`load_state_dict`, which Lightning saves into
  every checkpoint and restores only when it restarts mid-epoch (`fit_loop.restarting`).
"""

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[Any]):
    """Yields `order(generator)` with a generator seeded by (seed, epoch). Lightning calls
    set_epoch before each epoch; without it, each pass counts as the next epoch."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, n_items: int) -> None:
        """The next pass starts after its first n_items (a resumed epoch)."""
        self._skip = n_items

    def order(self, generator: torch.Generator) -> Iterator[Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        skip, self._skip = self._skip, 0
        yield from itertools.islice(self.order(generator), skip, None)


class SeededShuffle(EpochSampler):
    """A new permutation of range(n) each epoch, the same one for the same (seed, epoch)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def order(self, generator: torch.Generator) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=generator).tolist())


class ResumableLoader(DataLoader):
    """Counts the batches it has handed out in the current epoch; that count and the epoch are its
    checkpoint state. Lightning fetches no batch ahead when the loader has a length, so at a
    batch's end the count equals the batches trained on. Samplers that cannot skip (e.g. the
    SequentialSampler Lightning swaps in for overfit_batches) simply restart the epoch."""

    epoch = 0
    batches_done = 0
    _resume_at: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        # A generator: this body runs at the first batch, after Lightning's set_epoch.
        self.epoch = getattr(self.sampler, "epoch", 0)
        resume, self._resume_at = self._resume_at, None
        skip = 0
        if resume and resume[0] == self.epoch and hasattr(self.sampler, "skip_next"):
            skip = resume[1]
            self.sampler.skip_next(skip * (self.batch_size or 1))
        self.batches_done = skip
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]))
