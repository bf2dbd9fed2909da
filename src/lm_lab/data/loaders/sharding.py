"""Data-parallel shares, the same for every datamodule: the datamodule reads the rank and world
size of its trainer when a dataloader is requested (`trainer.use_distributed_sampler: false`).

Training: every rank draws the same global batches of batch_size * world_size items and takes its
own slice of each, so ranks never share an item, take equal steps (DDP needs them), and the
global batches equal those of one process with world_size times the batch. Evaluation: rank r
scores items r, r + W, ... (uneven by at most one; metrics are summed over ranks).
"""

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lm_lab.data.loaders.resumable import EpochSampler
from lm_lab.utils.errors import ConfigError


def ranks(trainer: Any) -> tuple[int, int]:
    """(global rank, world size) of the trainer a datamodule is attached to; (0, 1) without one."""
    return (trainer.global_rank, trainer.world_size) if trainer else (0, 1)


def rank_batches(order: Tensor, batch_size: int, rank: int, world_size: int) -> Iterator[Tensor]:
    """This rank's slice (B,) of each global batch cut from `order` (its length a multiple of
    world_size, so the last, shorter, batch splits evenly too)."""
    for batch in order.split(batch_size * world_size):
        yield batch.view(world_size, -1)[rank]


def eval_share(n_items: int, rank: int, world_size: int, what: str) -> range:
    """Items of an evaluation split scored by this rank; every rank needs at least one."""
    if n_items < world_size:
        raise ConfigError(
            f"trainer.devices: {what} has {n_items} for {world_size} ranks; every rank needs "
            "one: use fewer devices or a smaller data.batch_size"
        )
    return range(rank, n_items, world_size)


class ShuffledBatches(EpochSampler):
    """Batches of item indices from a new permutation of range(n) each epoch, seeded by (seed,
    epoch) so that a resumed epoch replays it (see EpochSampler). The n % world_size items a
    permutation leaves over sit this epoch out (others the next) and are counted by the caller."""

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(seed)
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.n_used = n - n % world_size  # equal shares for every rank

    def __len__(self) -> int:
        return math.ceil(self.n_used / (self.batch_size * self.world_size))

    def order(self, generator: torch.Generator) -> Iterator[Tensor]:
        permutation = torch.randperm(self.n, generator=generator)[: self.n_used]
        return rank_batches(permutation, self.batch_size, self.rank, self.world_size)
