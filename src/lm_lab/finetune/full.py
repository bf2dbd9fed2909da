"""Full fine-tuning: every parameter trains (the baseline the others are measured against)."""

from lm_lab.finetune.base import Strategy


class Full(Strategy):
    """Trains the whole backbone and the head."""

    def trains(self, name: str) -> bool:
        return True
