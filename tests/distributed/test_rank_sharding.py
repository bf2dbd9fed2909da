"""Data-parallel sampling: every rank gets its own share, none twice, none dropped silently."""

from types import SimpleNamespace

import pytest
import torch

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.loaders.language_modeling import RandomWindows
from lm_lab.data.loaders.synthetic import MQAR, SyntheticDataModule
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import CharTokenizer, IdTokenizer
from lm_lab.utils.errors import ConfigError


class NumberedTexts:
    """train/validation/test splits of numbered, labelled texts, so items can be told apart."""

    name = "numbered"

    def load(self) -> dict[str, Split]:
        return {
            name: Split([f"text {i} of {name} " * 3 for i in range(n)], ["a", "b"] * (n // 2))
            for name, n in (("train", 40), ("validation", 22), ("test", 22))
        }


def on_rank(task: str, rank: int, world: int, **kwargs) -> TextDataModule:
    dm = TextDataModule(
        NumberedTexts(), CharTokenizer(), task, batch_size=4, block_size=8, **kwargs
    )
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)
    return dm


def rows(loader, key: str) -> list[tuple]:
    """Each example or window as a tuple of its real tokens (padding depends on the batch)."""
    out = []
    for batch in loader:
        real = ~batch["pad_mask"] if "pad_mask" in batch else torch.ones_like(batch[key]).bool()
        out += [tuple(row[keep].tolist()) for row, keep in zip(batch[key], real, strict=True)]
    return out


def test_random_windows_split_each_global_batch_between_ranks():
    single = list(RandomWindows(500, 16, batch_size=8, n_windows=40, seed=3))
    shares = [list(RandomWindows(500, 16, 4, 40, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(single)  # same number of steps on every rank
    for k, batch in enumerate(single):  # the global batches of one process with twice the batch
        assert torch.equal(torch.cat([shares[0][k], shares[1][k]]), batch)


def test_random_windows_round_up_so_every_rank_steps_equally():
    shares = [RandomWindows(500, 16, 4, n_windows=10, rank=r, world_size=4) for r in range(4)]
    assert shares[0].n_windows == 12
    assert {sum(len(b) for b in share) for share in shares} == {3}


@pytest.mark.parametrize(("task", "key"), [("classify", "input_ids"), ("generate", "targets")])
def test_evaluation_items_are_scored_once_across_ranks(task, key):
    everything = sorted(rows(on_rank(task, 0, 1).val_dataloader(), key))
    per_rank = [rows(on_rank(task, r, 3).val_dataloader(), key) for r in range(3)]
    assert sorted(sum(per_rank, [])) == everything  # uneven shares (22 = 8 + 7 + 7), no padding


def test_classification_training_shards_are_disjoint_and_the_remainder_is_counted():
    modules = [on_rank("classify", r, 3) for r in range(3)]
    shares = [set(rows(dm.train_dataloader(), "input_ids")) for dm in modules]
    assert not (shares[0] & shares[1]) and not (shares[1] & shares[2])
    assert sum(map(len, shares)) == 39  # 40 examples, 1 left out this epoch (another next epoch)
    assert modules[0].stats["train/dropped_per_epoch_for_equal_ranks"] == 1


def synthetic_on_rank(rank: int, world: int, batch_size: int) -> SyntheticDataModule:
    task = MQAR(vocab_size=64, seq_len=16, num_kv_pairs=2)
    dm = SyntheticDataModule(
        task, IdTokenizer(64), "generate", batch_size, train_examples=41, eval_examples=10
    )
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)
    return dm


def test_synthetic_training_splits_each_global_batch_between_ranks():
    """MQAR/induction ranks used to train on the same batches: now 2 ranks x 4 = one process x 8,
    the 41st example sitting out the epoch (counted)."""
    single = rows(synthetic_on_rank(0, 1, 8).train_dataloader(), "input_ids")
    modules = [synthetic_on_rank(r, 2, 4) for r in (0, 1)]
    shares = [list(dm.train_dataloader()) for dm in modules]
    assert [len(share) for share in shares] == [5, 5]  # 40 of 41 examples, 4 per rank and step
    merged = [rows([a, b], "input_ids") for a, b in zip(*shares, strict=True)]  # global batches
    assert sum(merged, []) == single[:40]  # the single process's order, its first 40 examples
    assert len(set(sum(merged, []))) == 40  # no example twice
    assert modules[0].stats["train/dropped_per_epoch_for_equal_ranks"] == 1


def test_synthetic_evaluation_examples_are_scored_once_across_ranks():
    everything = sorted(rows(synthetic_on_rank(0, 1, 4).val_dataloader(), "input_ids"))
    per_rank = [rows(synthetic_on_rank(r, 3, 4).val_dataloader(), "input_ids") for r in range(3)]
    assert [len(share) for share in per_rank] == [4, 3, 3]
    assert sorted(sum(per_rank, [])) == everything


def test_more_ranks_than_evaluation_batches_fail_fast():
    dm = on_rank("generate", 0, 64, eval_windows=8)
    with pytest.raises(ConfigError, match="trainer.devices"):
        dm.val_dataloader()
