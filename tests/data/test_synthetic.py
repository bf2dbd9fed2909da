"""MQAR and induction generators: the invariants that make them measure recall and nothing else."""

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.data.loaders.language_modeling import IGNORE
from lm_lab.data.loaders.synthetic import MQAR, Induction, SyntheticDataModule, generate
from lm_lab.data.tokenization.tokenizers import CharTokenizer, IdTokenizer, from_json
from lm_lab.utils.errors import ConfigError


@pytest.fixture
def mqar_batch() -> tuple[MQAR, torch.Tensor, torch.Tensor]:
    task = MQAR(vocab_size=64, seq_len=48, num_kv_pairs=6, num_queries=4)
    inputs, targets = generate(task, 300, seed=0, chunk=128)
    return task, inputs, targets


def test_every_queried_key_appears_earlier_with_exactly_its_value(mqar_batch):
    task, inputs, targets = mqar_batch
    C = 2 * task.num_kv_pairs
    for row, target in zip(inputs.tolist(), targets.tolist(), strict=True):
        pairs = dict(zip(row[0:C:2], row[1:C:2], strict=True))
        assert len(pairs) == task.num_kv_pairs  # keys are distinct
        for pos, answer in enumerate(target):
            if answer != IGNORE:
                assert pos >= C and pairs[row[pos]] == answer


def test_values_never_collide_with_keys(mqar_batch):
    task, inputs, _ = mqar_batch
    C = 2 * task.num_kv_pairs
    keys, values = inputs[:, 0:C:2], inputs[:, 1:C:2]
    assert keys.min() >= 1 and keys.max() < task.key_high
    assert values.min() >= task.key_high and values.max() < task.vocab_size


def test_answer_mask_covers_only_the_queries(mqar_batch):
    task, inputs, targets = mqar_batch
    assert ((targets != IGNORE).sum(1) == task.num_queries).all()
    assert (targets[:, : 2 * task.num_kv_pairs] == IGNORE).all()
    assert (inputs != 0).all()  # pad is never drawn


def test_mqar_is_reproducible_from_its_seed():
    task = MQAR(vocab_size=32, seq_len=16, num_kv_pairs=2)
    assert torch.equal(generate(task, 10, seed=3)[0], generate(task, 10, seed=3)[0])
    assert not torch.equal(generate(task, 10, seed=3)[0], generate(task, 10, seed=4)[0])


def test_induction_scores_the_second_copy_only():
    inputs, targets = generate(Induction(vocab_size=50, seq_len=20), 8, seed=0)
    assert torch.equal(inputs[:, :10], inputs[:, 10:])
    assert (targets[:, :10] == IGNORE).all() and (targets[:, -1] == IGNORE).all()
    assert torch.equal(targets[:, 10:-1], inputs[:, 11:])


def test_mqar_too_short_sequence_fails_fast():
    with pytest.raises(ConfigError, match="seq_len"):
        MQAR(vocab_size=64, seq_len=10, num_kv_pairs=4)


def test_synthetic_data_needs_the_id_tokenizer():
    with pytest.raises(ConfigError, match="tokenizer=ids"):
        SyntheticDataModule(MQAR(64, 16, 2), CharTokenizer(["a"]), "generate")


def test_datamodule_yields_whole_batches_of_the_generator(compose):
    cfg = compose("experiment=mqar", "data.train_examples=40", "data.eval_examples=10", tiny=False)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.setup("fit")
    assert isinstance(datamodule.tokenizer, IdTokenizer)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].shape == (40, 64)  # all 40 fit in one batch of 512
    assert datamodule.stats["test/scored_tokens"] == 10 * 4


def test_id_tokenizer_survives_a_checkpoint_round_trip():
    tokenizer = from_json(IdTokenizer(300).to_json())
    assert tokenizer.vocab_size == 300 and tokenizer.encode("7 0 299") == [7, 0, 299]
