"""Instruction-tuning examples (`task=sft`): each conversation encoded once
(`tokenization.conversation.encode_conversation`: the replies scored, everything else -100),
shifted into (input_ids, targets), fitted to the context by `data.truncation`, and batched one
conversation per row or, with `data.packing=true`, several per row.

Packing puts whole conversations into rows of at most `data.max_length` tokens (best fit,
longest first: deterministic, and it leaves little room unused); a conversation is never split.
A packed batch carries `segments` (B, T): the index of each token's conversation in its row
(padding is a run of its own), from which the encoder restarts positions and masks attention
between conversations (`encoders.packing`). Rows are right-padded to the longest in the batch;
padding takes no loss. Unpacked batches need no pad mask: attention is causal, so right padding
never reaches a real token.
"""

import bisect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lm_lab.data.sources.conversations import Conversation
from lm_lab.data.tokenization.conversation import (
    IGNORE,
    PlainTemplate,
    conversation_text,
    encode_conversation,
)
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.utils.errors import ConfigError

TRUNCATIONS = ("skip", "cut")
PAD_SEGMENT = -1  # the segment id of padding in a packed row


def check_truncation(truncation: str) -> None:
    """The one check of `data.truncation`: the loader runs it, and `cli.validate` before any
    data is read."""
    if truncation not in TRUNCATIONS:
        raise ConfigError(
            f"data.truncation={truncation}: must be one of {', '.join(TRUNCATIONS)} (skip: count "
            "and leave out a conversation over data.max_length; cut: keep its last reply)"
        )


@dataclass(frozen=True)
class Example:
    """One conversation, shifted: the model reads `input_ids` and predicts `targets` (L,) each."""

    input_ids: Tensor  # (L,) long
    targets: Tensor  # (L,) long, IGNORE where no loss is taken

    def __len__(self) -> int:
        return len(self.input_ids)


def cut(ids: list[int], targets: list[int], size: int) -> tuple[list[int], list[int]]:
    """`size` ids of a conversation too long for the context (`data.truncation=cut`): the last
    reply whole with as much of the prompt's end as fits; a reply longer than that keeps the
    prompt's last half-window and loses its own end. Ids and targets are cut at the same
    columns, so a kept target is still its own token's."""
    scored = [i for i, target in enumerate(targets) if target != IGNORE]
    reply = scored[-1]  # the last scored id: walk back to where its run (the last reply) starts
    while reply > 0 and targets[reply - 1] != IGNORE:
        reply -= 1
    prompt_room = max(size - (len(ids) - reply), min(reply, size // 2))
    start = reply - min(reply, prompt_room)
    return ids[start : start + size], targets[start : start + size]


@contextmanager
def located(conversation: Conversation) -> Iterator[None]:
    """An error found while rendering a conversation names the record it came from."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"{conversation.where or 'a conversation'}: {err}") from None


def texts(
    conversations: Sequence[Conversation], tokenizer: Tokenizer, template: PlainTemplate | None
) -> list[str]:
    """The conversations as the model reads them: what a tokenizer trained here is fitted on."""
    rendered = []
    for conversation in conversations:
        with located(conversation):
            rendered.append(conversation_text(tokenizer, conversation.messages, template))
    return rendered


class InstructionExamples:
    """The encoded conversations of one split, with `stats`: examples kept, `too_long` (cut or
    skipped, as `truncation` says), `dropped_no_reply_tokens` (nothing left to score),
    `tokens`, `scored_tokens` and `unknown_chars`."""

    def __init__(self, examples: list[Example], stats: dict[str, int]) -> None:
        self.examples, self.stats = examples, stats

    @classmethod
    def encode(
        cls,
        conversations: Sequence[Conversation],
        tokenizer: Tokenizer,
        template: PlainTemplate | None,
        max_length: int,
        truncation: str,
    ) -> "InstructionExamples":
        check_truncation(truncation)
        examples: list[Example] = []
        stats = {"too_long": 0, "dropped_no_reply_tokens": 0, "unknown_chars": 0}
        for conversation in conversations:
            with located(conversation):
                ids, targets = encode_conversation(tokenizer, conversation.messages, template)
            if all(target == IGNORE for target in targets[1:]):
                stats["dropped_no_reply_tokens"] += 1
                continue
            if len(ids) > max_length + 1:  # the shift reads max_length + 1 ids
                stats["too_long"] += 1
                if truncation == "skip":
                    continue
                ids, targets = cut(ids, targets, max_length + 1)  # keeps the last reply's start
            stats["unknown_chars"] += tokenizer.count_unknown(ids)
            examples.append(Example(torch.tensor(ids[:-1]), torch.tensor(targets[1:])))
        stats["examples"] = len(examples)
        stats["tokens"] = sum(map(len, examples))
        stats["scored_tokens"] = sum(int((e.targets != IGNORE).sum()) for e in examples)
        return cls(examples, stats)


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows of example indices, each row's lengths summing to at most `capacity`: best fit,
    longest first (each example goes to the row it fills most tightly, else a new row)."""
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (space left, row index), sorted
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        at = bisect.bisect_left(room, (lengths[i], -1))
        if at == len(room):
            rows.append([i])
            left, row = capacity - lengths[i], len(rows) - 1
        else:
            left, row = room.pop(at)
            rows[row].append(i)
            left -= lengths[i]
        bisect.insort(room, (left, row))
    return rows


def padding_stats(lengths: Sequence[int], rows: list[list[int]], capacity: int) -> dict[str, float]:
    """Padding of rows of `capacity` tokens: one example per row, packed, and the fraction of
    that padding packing saves (1.0: none left; 0.0: no better than one per row)."""
    tokens = sum(lengths)
    one_per_row = len(lengths) * capacity - tokens
    packed = len(rows) * capacity - tokens
    return {
        "pad_fraction_unpacked": one_per_row / max(1, len(lengths) * capacity),
        "pad_fraction_packed": packed / max(1, len(rows) * capacity),
        "padding_saved": 1 - packed / one_per_row if one_per_row else 0.0,
    }


class InstructionDataset(Dataset):
    """Rows of examples: one example each, or several (`pack`). An item is a row's examples."""

    def __init__(self, examples: InstructionExamples, rows: list[list[int]], packed: bool) -> None:
        self.examples, self.rows, self.packed = examples.examples, rows, packed

    @classmethod
    def of(
        cls, examples: InstructionExamples, max_length: int, packing: bool
    ) -> "InstructionDataset":
        if not packing:
            return cls(examples, [[i] for i in range(len(examples.examples))], packed=False)
        return cls(examples, pack([len(e) for e in examples.examples], max_length), packed=True)

    def row_length(self, i: int) -> int:
        return sum(len(self.examples[j]) for j in self.rows[i])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> list[Example]:
        return [self.examples[j] for j in self.rows[i]]


def collate(rows: list[list[Example]], pad_id: int, packed: bool) -> dict[str, Tensor]:
    """{"input_ids", "targets"} (B, T), right-padded to the longest row, and for packed rows
    `segments` (B, T): 0, 1, ... per conversation of the row, PAD_SEGMENT on padding."""
    T = max(sum(map(len, row)) for row in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)  # (B, T)
    segments = torch.full((len(rows), T), PAD_SEGMENT, dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        at = 0
        for s, example in enumerate(row):
            end = at + len(example)
            input_ids[b, at:end], targets[b, at:end], segments[b, at:end] = (
                example.input_ids,
                example.targets,
                s,
            )
            at = end
    batch = {"input_ids": input_ids, "targets": targets}
    return batch | {"segments": segments} if packed else batch
