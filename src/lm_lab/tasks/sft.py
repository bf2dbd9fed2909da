"""Instruction tuning (`task=sft`): a causal language model trained on conversations, the loss
on the assistant's replies only (the datamodule sets every other target to -100).

The loss is `LanguageModel`'s, which already weighs tokens, not examples: cross-entropy
averaged over every scored target of a batch, and validation accumulates each batch's mean
weighted by its scored-token count, so `val/loss` is the mean over the split's reply tokens
and `val/ppl` its exponential. A checkpoint is a LanguageModel-family one (generate.py, export
and `build.load_task` read it); its config holds `task.template`, the plain template the data
was rendered with, so generation renders prompts the same way.
"""

from typing import Any

from lm_lab.tasks.language_model import LanguageModel
from lm_lab.tasks.metrics import METRICS


class InstructionModel(LanguageModel):
    """A LanguageModel whose data are conversations; `template` (a PlainTemplate) is data
    rendering, kept here only because the task config carries it (see the module doc)."""

    METRICS = METRICS["sft"]

    def __init__(self, *args: Any, template: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.template = template
