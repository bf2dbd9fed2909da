"""ResumableLoader: an epoch interrupted and resumed, any number of times, yields exactly the
batches of one uninterrupted epoch, in order. The loader is driven here the way Lightning
drives it: set_epoch, iterate, state_dict into the checkpoint, load_state_dict on restart."""

import pytest
import torch

from lm_lab.data.loaders.resumable import ResumableLoader, SeededShuffle
from lm_lab.data.loaders.sharding import ShuffledBatches
from lm_lab.data.loaders.synthetic import ExampleBatches

EPOCH = 1  # an epoch after the first, so the epoch in the state matters too


def example_loader() -> ResumableLoader:
    """Classification-style: 20 examples, a sampler of items, 4 items a batch (5 batches)."""
    return ResumableLoader(list(range(20)), sampler=SeededShuffle(20, seed=3), batch_size=4)


def batch_loader() -> ResumableLoader:
    """LM/synthetic-style: the sampler yields whole batches (batch_size=None), 5 of them."""
    rows = torch.arange(20)[:, None]  # (20, 1): example i is the row [i]
    dataset = ExampleBatches(rows, rows)
    return ResumableLoader(dataset, sampler=ShuffledBatches(20, 4, seed=3), batch_size=None)


def ids(batch) -> list[int]:
    return (batch["input_ids"] if isinstance(batch, dict) else batch).flatten().tolist()


def run(loader: ResumableLoader, state: dict | None, n_batches: int | None) -> list[list[int]]:
    """Batches of epoch EPOCH, restarted from `state` if given, stopping after n_batches."""
    if state is not None:
        loader.load_state_dict(state)
    loader.sampler.set_epoch(EPOCH)
    out = []
    for batch in loader:
        out.append(ids(batch))
        if len(out) == n_batches:
            break
    return out


@pytest.mark.parametrize("make", [example_loader, batch_loader])
def test_interrupt_resume_interrupt_resume_equals_one_epoch(make):
    whole = run(make(), None, None)
    assert len(whole) == 5 and sorted(sum(whole, [])) == list(range(20))  # 5 batches of 4
    first = make()
    part_1 = run(first, None, 2)
    assert first.state_dict() == {"epoch": EPOCH, "batches_done": 2}
    second = make()
    part_2 = run(second, first.state_dict(), 1)
    assert second.state_dict() == {"epoch": EPOCH, "batches_done": 3}  # 2 before, 1 now
    part_3 = run(make(), second.state_dict(), None)
    assert part_1 + part_2 + part_3 == whole


def test_a_state_of_another_epoch_restarts_nothing():
    """A checkpoint taken at an epoch's end resumes the next epoch from its start."""
    loader = example_loader()
    assert run(loader, {"epoch": EPOCH - 1, "batches_done": 5}, None) == run(
        example_loader(), None, None
    )
