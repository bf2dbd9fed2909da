"""Soft prompts: every encoder reads them, and padding still changes nothing."""

import pytest
import torch
from hydra.utils import instantiate

ENCODERS = ["transformer", "bilstm", "hybrid"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_changes_nothing_with_a_prompt(encoder, classifier, padded_batch):
    module, cfg = classifier(f"model={encoder}", "finetune=prompt")
    instantiate(cfg.finetune).apply(module)
    ids, pad_mask = padded_batch
    alone = module(ids[1:, :5], None)  # row 1 without its 4 pad tokens
    assert torch.allclose(module(ids, pad_mask)[1:], alone, atol=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_prompt_reaches_the_states_and_they_keep_their_shape(encoder, classifier, padded_batch):
    module, cfg = classifier(f"model={encoder}", "finetune=prompt")
    instantiate(cfg.finetune).apply(module)
    ids, pad_mask = padded_batch
    before = module.backbone(ids, pad_mask)
    assert before.shape == (*ids.shape, cfg.model.d_model)
    with torch.no_grad():
        module.backbone.encoder.soft_prompt.add_(1.0)
    assert not torch.allclose(module.backbone(ids, pad_mask), before)
