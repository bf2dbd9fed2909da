"""TextDataModule on tiny sources: both tasks, batches of the contract's shape, determinism."""

import pytest
import torch

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import BPETokenizer, CharTokenizer
from lm_lab.utils.errors import ConfigError


class TinySource:
    """An in-memory source: positive texts talk about cats, negative ones about dogs."""

    name = "tiny"

    def __init__(self, labelled: bool = True, test: bool = True) -> None:
        self.labelled, self.test, self.loads = labelled, test, 0

    def load(self) -> dict[str, Split]:
        self.loads += 1
        names = ["train", "validation"] + (["test"] if self.test else [])
        splits = {}
        for k, name in enumerate(names):
            texts = [
                f"{'cat' if i % 2 else 'dog'} number {i} of {name} " * (1 + i % 5)
                for i in range(40 + k)
            ]
            labels = ["pos" if i % 2 else "neg" for i in range(len(texts))]
            splits[name] = Split(texts, labels if self.labelled else None, origin=name)
        return splits


def datamodule(task: str, source=None, tokenizer=None, **kwargs) -> TextDataModule:
    defaults = {"batch_size": 4, "max_length": 16, "block_size": 8, "train_windows_per_epoch": 20}
    return TextDataModule(
        source or TinySource(), tokenizer or CharTokenizer(), task, **(defaults | kwargs)
    )


def test_classify_batches_follow_the_contract():
    dm = datamodule("classify")
    dm.setup("fit")
    assert dm.label_names == ["neg", "pos"] and dm.tokenizer.is_fitted
    batch = next(iter(dm.train_dataloader()))
    B, T = batch["input_ids"].shape
    assert B == 4 and T <= 16
    assert batch["pad_mask"].shape == (B, T) and batch["pad_mask"].dtype == torch.bool
    assert batch["labels"].shape == (B,) and batch["labels"].dtype == torch.long
    assert (batch["input_ids"][batch["pad_mask"]] == dm.tokenizer.pad_id).all()
    assert dm.stats["train/examples"] == 40 and dm.stats["train/truncated"] > 0
    assert dm.stats["validation/examples"] == 41 and dm.stats["test/examples"] == 42


def test_generate_batches_follow_the_contract():
    dm = datamodule("generate")
    dm.setup()
    assert dm.label_names is None
    assert dm.chars_per_token == {"train": 1.0, "validation": 1.0, "test": 1.0}
    train = list(dm.train_dataloader())
    assert len(train) == 5 and train[0]["input_ids"].shape == (4, 8)
    assert torch.equal(train[0]["targets"][:, :-1], train[0]["input_ids"][:, 1:])
    val = next(iter(dm.val_dataloader()))
    assert val["input_ids"].shape == val["targets"].shape == (4, 8)
    assert dm.stats["validation/windows"] > 0 and dm.stats["train/tokens"] > 0


@pytest.mark.parametrize("task", ["classify", "generate"])
def test_characters_unseen_in_training_are_counted_per_split(task):
    """Training has no v, l, s: each repetition of "of validation" holds 2 of them, 121
    repetitions (41 + 80); "of test" 1, 123 repetitions. The separator of LM streams is known."""
    dm = datamodule(task, max_length=1000)
    dm.setup()
    counts = [dm.stats[f"{name}/unknown_chars"] for name in ("train", "validation", "test")]
    assert counts == [0, 242, 123]


def test_classify_evaluation_scores_every_example_once_longest_first():
    """TinySource's texts repeat 1..5 times in turn, so dataset order pads every batch of 4 to
    ~4 repetitions; longest first, batches hold equal lengths and pad almost nothing."""
    dm = datamodule("classify", max_length=1000)
    dm.setup()
    examples = dm._datasets["validation"].token_ids
    batches = list(dm.val_dataloader())
    scored = [
        tuple(ids[~pad].tolist())
        for batch in batches
        for ids, pad in zip(batch["input_ids"], batch["pad_mask"], strict=True)
    ]
    assert sorted(scored) == sorted(tuple(ids.tolist()) for ids in examples)
    assert [len(ids) for ids in scored] == sorted((len(ids) for ids in examples), reverse=True)
    padded = sum(batch["input_ids"].numel() for batch in batches)
    groups = [examples[i : i + 4] for i in range(0, len(examples), 4)]  # dataset order
    in_order = sum(max(len(ids) for ids in group) * len(group) for group in groups)
    assert padded < 0.8 * in_order, (padded, in_order)


def test_setup_is_idempotent_and_keeps_a_fitted_tokenizer():
    source = TinySource()
    pretrained = BPETokenizer(vocab_size=260).fit(["something else entirely"])
    before = pretrained.to_json()
    dm = datamodule("classify", source=source, tokenizer=pretrained)
    dm.setup("fit")
    dm.setup("test")
    dm.train_dataloader()
    assert source.loads == 1
    assert dm.tokenizer is pretrained and pretrained.to_json() == before


def test_loaders_are_deterministic_given_the_seed():
    def first_batches(task: str, seed: int) -> list:
        dm = datamodule(task, seed=seed)
        return [b["input_ids"].tolist() for b in dm.train_dataloader()][:3]

    for task in ("classify", "generate"):
        assert first_batches(task, 0) == first_batches(task, 0)
        assert first_batches(task, 0) != first_batches(task, 1)


def test_missing_test_split_falls_back_to_validation():
    dm = datamodule("generate", source=TinySource(test=False))
    dm.setup()
    assert dm.test_split == "validation" and dm.stats["test/from_validation"] == 1
    assert [b["input_ids"].tolist() for b in dm.test_dataloader()] == [
        b["input_ids"].tolist() for b in dm.val_dataloader()
    ]


def test_classify_on_unlabelled_source_says_what_to_do():
    dm = datamodule("classify", source=TinySource(labelled=False))
    with pytest.raises(ConfigError, match=r"task=classify needs labelled data: data=tiny has no"):
        dm.setup()


def test_max_train_examples_is_a_label_budget():
    dm = datamodule("classify", max_train_examples=10)
    dm.setup()
    assert dm.stats["train/examples"] == 10 and dm.stats["train/dropped_over_budget"] == 30


def test_max_eval_examples_scores_the_first_n_of_validation_and_test_only():
    whole = datamodule("classify")
    whole.setup()
    dm = datamodule("classify", max_eval_examples=3)
    dm.setup()
    assert dm.stats["train/examples"] == whole.stats["train/examples"]  # training untouched
    for split in ("validation", "test"):
        texts, labels = dm.texts_and_labels(split)
        assert (texts, labels) == tuple(x[:3] for x in whole.texts_and_labels(split))
        dropped = whole.stats[f"{split}/examples"] - 3
        assert dm.stats[f"{split}/dropped_over_budget"] == dropped > 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"batch_size": 0}, "data.batch_size"), ({"eval_windows": -1}, "data.eval_windows")],
)
def test_bad_sizes_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        datamodule("generate", **kwargs)


def test_block_size_longer_than_a_split_is_a_config_error():
    dm = datamodule("generate", block_size=100_000)
    with pytest.raises(ConfigError, match=r"data\.block_size=100000"):
        dm.setup()
