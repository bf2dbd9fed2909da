"""Head-only fine-tuning (linear probing): the pretrained backbone is a frozen feature extractor."""

from lm_lab.finetune.base import Strategy


class Head(Strategy):
    """Only the task's own parameters (the classifier head) train; see `Strategy.apply`."""
