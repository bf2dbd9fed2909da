"""mode=length's two numbers on hand-computed cases: perplexity over scored targets only, and
induction accuracy over the second copy's scored positions only."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lm_lab.data.tokenization.tokenizers import IdTokenizer
from lm_lab.eval.probes import induction_accuracy, perplexity


class Uniform(nn.Module):
    """Equal logits over V tokens: every target costs ln V, so the perplexity is exactly V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, self.vocab)  # (B, T, V)


def test_perplexity_divides_by_scored_targets_only():
    # 10 tokens = 9 targets in windows of 4: windows at 0 and 4 score 8, a tail window at 5
    # scores the last one and IGNOREs its first 3 (12 target slots, 9 scored): ppl = 4 exactly
    # (dividing by every slot would give 4 ** (9 / 12) = 2.83)
    stream = torch.arange(1, 11) % 4
    cfg = OmegaConf.create({"batch_size": 2, "max_windows": None})
    assert perplexity(Uniform(4), stream, 4, cfg) == pytest.approx(4.0, rel=1e-6)


class HalfInduction(nn.Module):
    """Copies from one half back, right at the second copy's first two scored positions and
    wrong (pad, never drawn) at every other one."""

    tokenizer = IdTokenizer(16)

    def forward(self, inputs):
        n, T = inputs.shape
        half = T // 2
        predicted = torch.zeros_like(inputs)  # (n, T), pad
        predicted[:, half : half + 2] = inputs[:, 1:3]  # t -> inputs[t + 1 - half]
        return nn.functional.one_hot(predicted, 16).float()  # (n, T, V)


def test_induction_accuracy_scores_only_the_second_copy():
    # length 8: targets at t = 4, 5, 6 (t = 7 has no next token); 2 of 3 hit -> 2/3
    # (every position would give 2/8)
    acc = induction_accuracy(HalfInduction(), length=8, n=5, seed=0)
    assert acc == pytest.approx(2 / 3)
