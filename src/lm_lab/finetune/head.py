"""Head-only fine-tuning (linear probing): the pretrained backbone is a frozen feature extractor.
For a language model (task=generate|sft) the head is the backbone's untied output layer
`lm_head`; one whose output layer is its embedding has none (`cli.validate` refuses it)."""

from lm_lab.finetune.base import Strategy


class Head(Strategy):
    """Only the task's own parameters (the classifier head, or a LM's `lm_head`) train; see
    `Strategy.apply`."""

    def trains(self, name: str) -> bool:
        return name.startswith("backbone.lm_head.")
