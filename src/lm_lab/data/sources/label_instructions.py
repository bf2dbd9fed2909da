"""A labelled text source as instruction data (`data=sst2_sft`, `data=ag_news_sft`): each text
becomes a question whose answer is its label, the label names listed in the prompt, so that a
model answers in one of them and exact match scores it. The wrapped source's splits are kept as
they are, less the training texts also held out (`split.drop_seen_in_evaluation`, as
classification reads them), since no conversation may be in two splits. `pair` and
`choice_prompt` also shape pydoc_sft's conversations."""

from collections.abc import Sequence
from typing import Any

from lm_lab.data.sources.conversations import Conversation, check_splits_disjoint
from lm_lab.data.sources.records import Conversations
from lm_lab.data.sources.split import Split, drop_seen_in_evaluation
from lm_lab.utils.errors import ConfigError


def pair(prompt: str, answer: str, kind: str) -> Conversation:
    """One user turn and the assistant's answer."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return Conversation(messages, kind)


def choice_prompt(instruction: str, text: str, labels: Sequence[str]) -> str:
    """The instruction, the text, and the answers allowed: what a label-like kind asks."""
    return f"{instruction}\n\n{text}\n\nAnswer with one of: {', '.join(labels)}."


class LabelInstructions:
    """SFT source over a labelled source (`records`: anything with `load() -> {split: Split}`):
    `load_conversations()` -> {split: [Conversation]}, kind "classify". Texts without a label
    are dropped, as classification drops them."""

    name = "label_instructions"

    def __init__(self, records: Any, instruction: str) -> None:
        if not instruction.strip():
            raise ConfigError("data.source.instruction: empty; say what the answer should be")
        self.records = records
        self.instruction = instruction.strip()

    def load_conversations(self) -> dict[str, Conversations]:
        splits = drop_seen_in_evaluation(self.records.load())  # as classification does
        labels = sorted({y for split in splits.values() for y in split.labels or [] if y})
        if len(labels) < 2:
            raise ConfigError(
                f"{splits['train'].origin}: instruction data from labels needs at least 2 "
                f"labels, found {labels}; check data.source.records.label_column"
            )
        conversations = {name: self.conversations(split, labels) for name, split in splits.items()}
        check_splits_disjoint(conversations, splits["train"].origin)
        return conversations

    def conversations(self, split: Split, labels: list[str]) -> Conversations:
        """The split's labelled texts as questions; the split's own counts carried."""
        kept = [
            (text, label)
            for text, label in zip(split.texts, split.labels or [], strict=False)
            if label is not None
        ]
        stats = {"read": len(split.texts), **split.stats}
        made = (pair(choice_prompt(self.instruction, t, labels), y, "classify") for t, y in kept)
        return Conversations(made, split.origin, stats)
