"""Classifier behaviour on the composed classify config."""

import pytest
import torch

from lm_lab.build import build_module
from lm_lab.data.tokenizers import CharTokenizer


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
@pytest.mark.parametrize("encoder", ["transformer", "bilstm", "hybrid"])
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
    cfg = compose("task=classify", "task.pooling=max")
    with pytest.raises(Exception, match="task.pooling"):  # Hydra wraps constructor errors
        build_module(cfg, CharTokenizer().fit(["ab"]), ["x", "y"])
