"""Classification examples: every text tokenized once, truncated, paired with its label id, and a
collate that right-pads a batch and marks the padding."""

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.utils.errors import ConfigError


def label_names_of(train: Split) -> list[str]:
    """Class names, sorted, from the training split: the fixed order of the head's outputs."""
    return sorted({label for label in train.labels or [] if label is not None})


TRAINING_SPLIT = ("the training split", "fix the label or add training examples of it")


def label_ids(
    split: Split,
    split_name: str,
    label_names: list[str],
    known_by: tuple[str, str] = TRAINING_SPLIT,
) -> list[int | None]:
    """Label id per text (None where the text is unlabelled), by name: the id of a label is its
    index in `label_names`. A class outside them (never shown in training, or unknown to a
    trained head) cannot be learnt or scored, so it is an error, not a silent drop; `known_by`
    is (who knows the labels, what to do) for that message."""
    index = {name: i for i, name in enumerate(label_names)}
    ids: list[int | None] = []
    for label in split.labels or [None] * len(split.texts):
        if label is not None and label not in index:
            owner, fix = known_by
            raise ConfigError(
                f"{split.origin or split_name}: label {label!r} of the {split_name} split never "
                f"occurs in {owner} (labels: {', '.join(label_names)}); {fix}"
            )
        ids.append(None if label is None else index[label])
    return ids


class ClassificationDataset(Dataset):
    """Token ids (each at most `max_length`, longer texts truncated and counted) and label ids.

    `stats` counts what happened to the split: examples kept, truncated, and dropped by reason.
    `texts` keeps the raw text of each example, so a reference model (lm_lab.baselines) sees
    exactly the examples the model sees.
    """

    def __init__(self, token_ids: list[Tensor], labels: list[int], texts: list[str]) -> None:
        self.token_ids = token_ids  # each (L,) long, 1 <= L <= max_length
        self.labels = labels
        self.texts = texts
        self.stats: dict[str, int] = {"examples": len(labels)}

    @classmethod
    def from_split(
        cls,
        split: Split,
        split_name: str,
        tokenizer: Tokenizer,
        label_names: list[str],
        max_length: int,
        max_examples: int | None = None,
        known_by: tuple[str, str] = TRAINING_SPLIT,
    ) -> "ClassificationDataset":
        labels = label_ids(split, split_name, label_names, known_by)
        pairs = [
            (text, label)
            for text, label in zip(split.texts, labels, strict=True)
            if label is not None
        ]
        unlabelled = len(split.texts) - len(pairs)
        budget_cut = max(0, len(pairs) - max_examples) if max_examples else 0
        pairs = pairs[: len(pairs) - budget_cut]
        bos = tokenizer.bos_ids  # a pretrained model's BOS before each text, if it wants one
        encoded = [bos + ids for ids in tokenizer.encode_batch([text for text, _ in pairs])]
        kept = [
            (ids, pair) for ids, pair in zip(encoded, pairs, strict=True) if len(ids) > len(bos)
        ]
        dataset = cls(
            [torch.tensor(ids[:max_length], dtype=torch.long) for ids, _ in kept],
            [label for _, (_, label) in kept],
            [text for _, (text, _) in kept],
        )
        dataset.stats |= {
            "truncated": sum(len(ids) > max_length for ids, _ in kept),
            "dropped_unlabelled": unlabelled,
            "dropped_no_tokens": len(pairs) - len(kept),
            "dropped_over_budget": budget_cut,
            "unknown_chars": sum(tokenizer.count_unknown(ids) for ids, _ in kept),
        }
        return dataset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.token_ids[i], self.labels[i]


def collate(batch: list[tuple[Tensor, int]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the longest sequence in the batch; pad_mask is True at padding."""
    ids, labels = zip(*batch, strict=True)
    lengths = torch.tensor([len(x) for x in ids])  # (B,)
    input_ids = pad_sequence(list(ids), batch_first=True, padding_value=pad_id)  # (B, T)
    pad_mask = torch.arange(input_ids.shape[1])[None, :] >= lengths[:, None]  # (B, T)
    return {"input_ids": input_ids, "pad_mask": pad_mask, "labels": torch.tensor(labels)}
