"""Classification examples: label ids from the training split, truncation, padding."""

import pytest
import torch

from lm_lab.data.loaders.classification import (
    ClassificationDataset,
    collate,
    label_ids,
    label_names_of,
)
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.utils.errors import ConfigError


def test_collate_right_pads_and_marks_padding():
    batch = [(torch.tensor([5, 6, 7]), 1), (torch.tensor([8]), 0), (torch.tensor([9, 9]), 2)]
    out = collate(batch, pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 9, 0]]
    assert out["pad_mask"].tolist() == [[False] * 3, [False, True, True], [False, False, True]]
    assert out["labels"].tolist() == [1, 0, 2]
    assert out["input_ids"].dtype == out["labels"].dtype == torch.long
    assert out["pad_mask"].dtype == torch.bool


def test_labels_are_sorted_names_of_the_training_split():
    train = Split(["a", "b", "c", "d"], ["pos", "neg", None, "pos"])
    assert label_names_of(train) == ["neg", "pos"]
    assert label_ids(train, "train", ["neg", "pos"]) == [1, 0, None, 1]


def test_label_unseen_in_training_names_split_and_label():
    val = Split(["x"], ["neutral"], origin="data/validation.csv")
    with pytest.raises(
        ConfigError, match=r"data/validation\.csv: label 'neutral' of the validation"
    ):
        label_ids(val, "validation", ["neg", "pos"])


def test_dataset_truncates_drops_unlabelled_and_counts():
    tok = CharTokenizer().fit(["abcdefgh"])
    split = Split(["abcdefgh", "ab", "cz", "éfz"], ["x", None, "y", "x"])  # z, é: unseen
    ds = ClassificationDataset.from_split(split, "train", tok, ["x", "y"], max_length=4)
    assert len(ds) == 3
    assert [len(ids) for ids, _ in ds] == [4, 2, 3]
    assert ds.token_ids[1].tolist() == [tok.encode("c")[0], tok.unk_id]
    assert [label for _, label in ds] == [0, 1, 0]
    assert ds.stats == {
        "examples": 3,
        "truncated": 1,
        "dropped_unlabelled": 1,
        "dropped_no_tokens": 0,
        "dropped_over_budget": 0,
        "unknown_chars": 3,
    }


def test_label_budget_keeps_the_first_examples():
    tok = CharTokenizer().fit(["abc"])
    split = Split(["a", "b", "c"], ["x", "y", "x"])
    ds = ClassificationDataset.from_split(split, "train", tok, ["x", "y"], 8, max_examples=2)
    assert [label for _, label in ds] == [0, 1] and ds.stats["dropped_over_budget"] == 1
