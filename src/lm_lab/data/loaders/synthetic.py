"""Synthetic recall tasks whose answer can only come from the context: MQAR and induction.

Both are token-level problems: a generator draws whole batches of `input_ids` (N, T) and
`targets` (N, T) with IGNORE everywhere except the positions that test recall, so the causal
LM loss and accuracy measure exactly that. Token 0 is never drawn: it is the pad id of
`IdTokenizer`, whose embedding is frozen at zero.
"""

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset

from lm_lab.data.loaders.language_modeling import IGNORE
from lm_lab.data.loaders.resumable import ResumableLoader
from lm_lab.data.loaders.sharding import ShuffledBatches, eval_share, ranks
from lm_lab.data.tokenization.tokenizers import IdTokenizer
from lm_lab.utils.errors import ConfigError

SPLITS = ("train", "validation", "test")


def _distinct(n: int, high: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct integers in [0, high) per row, in random order: (n, k)."""
    return torch.rand(n, high, generator=generator).argsort(dim=1)[:, :k]


class MQAR:
    """Multi-query associative recall (Zoology, Arora et al. 2023).

    A sequence starts with `num_kv_pairs` key-value pairs `k1 v1 k2 v2 ...`; keys come from
    [1, vocab_size / 2), values from [vocab_size / 2, vocab_size), so a value is never a key.
    The rest holds random filler tokens, with `num_queries` of the keys placed again at
    distinct even offsets drawn with a power law (short gaps likelier, `power_a` as Zoology);
    the target at a query is the value its key was paired with, every other target is IGNORE.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        seq_len: int = 64,
        num_kv_pairs: int = 4,
        num_queries: int | None = None,
        power_a: float = 0.01,
    ) -> None:
        self.vocab_size, self.seq_len, self.num_kv_pairs = vocab_size, seq_len, num_kv_pairs
        self.num_queries = num_kv_pairs if num_queries is None else num_queries
        self.power_a = power_a
        self.key_high = vocab_size // 2  # keys in [1, key_high), values in [key_high, vocab)
        if self.key_high - 1 < num_kv_pairs:
            raise ConfigError(
                f"data.generator.vocab_size={vocab_size}: too small for {num_kv_pairs} distinct "
                f"keys; raise it above {2 * num_kv_pairs + 2}"
            )
        if not 1 <= self.num_queries <= num_kv_pairs:
            raise ConfigError(
                f"data.generator.num_queries={num_queries}: must be 1..num_kv_pairs "
                f"({num_kv_pairs}) or null"
            )
        if self.query_slots < self.num_queries:
            raise ConfigError(
                f"data.generator.seq_len={seq_len}: leaves {self.query_slots} query slots after "
                f"{num_kv_pairs} pairs; raise it to at least {4 * num_kv_pairs}"
            )

    @property
    def query_slots(self) -> int:
        return (self.seq_len - 2 * self.num_kv_pairs) // 2

    def __call__(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        N, C = self.num_kv_pairs, 2 * self.num_kv_pairs
        keys = _distinct(n, self.key_high - 1, N, generator) + 1  # (n, N)
        values = torch.randint(self.key_high, self.vocab_size, (n, N), generator=generator)
        inputs = torch.randint(1, self.vocab_size, (n, self.seq_len), generator=generator)
        inputs[:, 0:C:2], inputs[:, 1:C:2] = keys, values
        slots = torch.arange(1, self.query_slots + 1, dtype=torch.float)
        weights = (self.power_a * slots ** (self.power_a - 1)).expand(n, -1)  # (n, S)
        gaps = torch.multinomial(weights, self.num_queries, generator=generator)  # (n, Q)
        positions = C + 2 * gaps  # (n, Q): a query sits here, its answer is the next target
        asked = torch.arange(self.num_queries).expand(n, -1)  # the first Q keys, shuffled already
        inputs.scatter_(1, positions, keys.gather(1, asked))
        targets = torch.full_like(inputs, IGNORE)
        targets.scatter_(1, positions, values.gather(1, asked))
        return inputs, targets  # (n, T) each


class Induction:
    """Random tokens from [low, vocab_size), the first half repeated as the second half: tokens
    of the second copy (after its first) are predictable only by looking back one copy, which
    is what induction heads do. Targets are IGNORE except there. `low` > 0 keeps pad out."""

    def __init__(self, vocab_size: int = 256, seq_len: int = 64, low: int = 1) -> None:
        if seq_len < 4 or seq_len % 2:
            raise ConfigError(f"data.generator.seq_len={seq_len}: must be an even number >= 4")
        self.vocab_size, self.seq_len, self.low = vocab_size, seq_len, low

    def __call__(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        half = self.seq_len // 2
        first = torch.randint(self.low, self.vocab_size, (n, half), generator=generator)
        inputs = torch.cat([first, first], dim=1)  # (n, T)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, half:-1] = inputs[:, half + 1 :]  # predict copy-2 token t+1 from its token t
        return inputs, targets  # (n, T) each


def generate(task: MQAR | Induction, n: int, seed: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """n examples, drawn in chunks so a large vocabulary never needs an (n, vocab) buffer."""
    generator = torch.Generator().manual_seed(seed)
    parts = [task(min(chunk, n - i), generator) for i in range(0, n, chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class ExampleBatches(Dataset):
    """Item = a tensor of example indices -> a whole batch, so no per-example Python loop."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs, self.targets = inputs, targets  # (N, T) each

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, rows: list[int]) -> dict[str, Tensor]:
        rows = torch.as_tensor(rows)
        return {"input_ids": self.inputs[rows], "targets": self.targets[rows]}  # (B, T) each


class SyntheticDataModule(L.LightningDataModule):
    """Fixed train/validation/test sets drawn from `generator` with distinct seeds; the tokenizer
    is an `IdTokenizer` of the generator's vocabulary (ids are used as they are)."""

    def __init__(
        self,
        generator: MQAR | Induction,
        tokenizer: IdTokenizer,
        task: str,
        batch_size: int = 512,
        train_examples: int = 100_000,
        eval_examples: int = 3_000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if task != "generate":
            raise ConfigError(f"task={task}: synthetic recall data needs task=generate")
        if not isinstance(tokenizer, IdTokenizer) or tokenizer.vocab_size != generator.vocab_size:
            raise ConfigError(
                f"tokenizer={tokenizer}: synthetic data needs tokenizer=ids with vocab_size "
                f"{generator.vocab_size} (the experiment presets set it)"
            )
        self.generator, self.tokenizer, self.task = generator, tokenizer, task
        self.batch_size, self.seed = batch_size, seed
        self.sizes = {"train": train_examples, "validation": eval_examples, "test": eval_examples}
        self.label_names: list[str] | None = None
        self.chars_per_token: dict[str, float] = {}  # no characters: no bits per character
        self.sparse_targets = True  # few scored positions: the LM projects only those
        self.stats: dict[str, int] = {}
        self._datasets: dict[str, ExampleBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        for i, split in enumerate(SPLITS):
            inputs, targets = generate(self.generator, self.sizes[split], self.seed * 3 + i)
            self._datasets[split] = ExampleBatches(inputs, targets)
            self.stats[f"{split}/examples"] = len(inputs)
            self.stats[f"{split}/scored_tokens"] = int((targets != IGNORE).sum())

    def train_dataloader(self) -> DataLoader:
        """Data-parallel like every datamodule (`sharding.py`): each rank trains on its own
        share of every global batch; the loader resumes mid-epoch exactly."""
        self.setup()
        dataset = self._datasets["train"]
        rank, world = ranks(self.trainer)
        sampler = ShuffledBatches(len(dataset), self.batch_size, self.seed, rank, world)
        if world > 1:
            self.stats["train/dropped_per_epoch_for_equal_ranks"] = len(dataset) % world
        return ResumableLoader(dataset, sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        """Rank r scores examples r, r + W, ..., in batches."""
        self.setup()
        dataset = self._datasets[split]
        rows = eval_share(len(dataset), *ranks(self.trainer), f"the {split} split's examples")
        sampler = BatchSampler(rows, self.batch_size, drop_last=False)
        return DataLoader(dataset, sampler=sampler, batch_size=None)
