"""Classifier behaviour on the composed classify config."""

import pytest
import torch

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.tasks.pooling import pool


@pytest.mark.parametrize("pooling", ["mean", "max", "last", "cls"])
@pytest.mark.parametrize("encoder", ["transformer", "bilstm", "hybrid", "cnn"])
def test_appending_pad_tokens_leaves_predictions_unchanged(encoder, pooling, compose):
    cfg = compose(f"model={encoder}", "task=classify", f"task.pooling={pooling}")
    tokenizer = CharTokenizer().fit(["abcdefgh"])
    module = build_module(cfg, tokenizer, ["x", "y", "z"]).eval()
    ids = torch.tensor([tokenizer.encode("abcdef")])  # (1, 6)
    padded = torch.cat([ids, torch.full((1, 5), tokenizer.pad_id)], 1)  # (1, 11)
    pad_mask = padded == tokenizer.pad_id
    with torch.no_grad():
        assert torch.allclose(module(ids, None), module(padded, pad_mask), atol=1e-5)


def test_unknown_pooling_names_the_key(compose):
    cfg = compose("task=classify", "task.pooling=median")
    with pytest.raises(Exception, match="task.pooling"):  # Hydra wraps constructor errors
        build_module(cfg, CharTokenizer().fit(["ab"]), ["x", "y"])


def test_max_pooling_takes_each_feature_s_largest_real_value():
    h = torch.tensor([[[1.0, 5.0], [3.0, -2.0], [100.0, 100.0]]])  # (1, 3, 2); position 2 is pad
    pad_mask = torch.tensor([[False, False, True]])
    assert pool(h, pad_mask, "max").tolist() == [[3.0, 5.0]]
