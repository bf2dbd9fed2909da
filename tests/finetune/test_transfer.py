"""init_from: backbone weights and tokenizer come from an LM checkpoint; mismatches fail early."""

import pytest
import torch

from lm_lab.finetune.transfer import load_backbone, pretrained_tokenizer
from lm_lab.utils.errors import ConfigError


@pytest.mark.parametrize("encoder", ["transformer", "bilstm"])
def test_init_from_copies_every_backbone_tensor_of_the_lm(encoder, classifier, lm_checkpoint):
    path = lm_checkpoint(f"model={encoder}")
    module, cfg = classifier(f"model={encoder}")
    loaded = load_backbone(module, path, cfg.model)
    lm_state = torch.load(path, weights_only=True)["state_dict"]
    assert loaded == {k for k in lm_state if k.startswith("backbone.")}
    state = module.state_dict()
    assert all(torch.equal(state[k], lm_state[k]) for k in loaded)


def test_a_causal_bilstm_lm_leaves_the_backward_lstms_new(classifier, lm_checkpoint):
    path = lm_checkpoint("model=bilstm")
    module, cfg = classifier("model=bilstm")
    loaded = load_backbone(module, path, cfg.model)
    new = {k for k in module.state_dict() if k.startswith("backbone.") and k not in loaded}
    assert new and all(".bwd." in k for k in new)


def test_width_mismatch_names_the_key(classifier, lm_checkpoint):
    path = lm_checkpoint("model.d_model=32")
    module, cfg = classifier("model.d_model=16")
    with pytest.raises(ConfigError, match="model.d_model=16"):
        load_backbone(module, path, cfg.model)


def test_architecture_mismatch_names_the_key(classifier, lm_checkpoint):
    path = lm_checkpoint("model=transformer")
    module, cfg = classifier("model=bilstm")
    with pytest.raises(ConfigError, match="model._target_"):
        load_backbone(module, path, cfg.model)


def test_the_checkpoint_tokenizer_replaces_the_configured_one(compose, lm_checkpoint):
    path = lm_checkpoint()
    cfg = compose("task=classify", "tokenizer=char", f"init_from={path}")
    assert type(pretrained_tokenizer(cfg)).__name__ == "ByteTokenizer"
