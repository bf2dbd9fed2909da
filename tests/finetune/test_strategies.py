"""Each strategy trains exactly what its formula says, and only those parameters get gradients."""

import pytest
from hydra.utils import instantiate

from lm_lab.finetune.base import trainable_report
from lm_lab.utils.errors import ConfigError

ENCODERS = ["transformer", "bilstm", "hybrid"]
STRATEGIES = ["full", "head", "partial", "lora", "adapter", "bitfit", "prompt", "ia3"]


def expected_trainable(strategy, cfg, module):
    """The count from each strategy's definition, over the module before apply."""
    ft, d = cfg.finetune, cfg.model.d_model
    params = dict(module.named_parameters())
    head = sum(p.numel() for n, p in params.items() if n.startswith("head."))
    backbone = {n: p for n, p in params.items() if n.startswith("backbone.")}

    def weights(patterns):
        return [p for n, p in backbone.items() if p.dim() == 2 and any(t in n for t in patterns)]

    if strategy == "full":
        return sum(p.numel() for p in params.values())
    if strategy == "head":
        return head
    if strategy == "partial":
        top = f"backbone.encoder.layers.{_n_layers(backbone) - ft.n_layers}."
        kept = (top, "backbone.norm.")
        return head + sum(p.numel() for n, p in backbone.items() if n.startswith(kept))
    if strategy == "lora":
        return head + sum(ft.rank * sum(p.shape) for p in weights(ft.targets))
    if strategy == "adapter":
        n = sum(type(m).__name__ in ft.targets for m in module.backbone.modules())
        return head + n * (2 * d * ft.size + ft.size + d)
    if strategy == "bitfit":
        return head + sum(p.numel() for n, p in backbone.items() if ".bias" in n)
    if strategy == "prompt":
        return head + ft.length * d
    if strategy == "ia3":
        rows = sum(p.shape[0] for p in weights(ft.scale_outputs))
        return head + rows + sum(p.shape[1] for p in weights(ft.scale_inputs))
    raise AssertionError(strategy)


def _n_layers(backbone):
    return 1 + max(
        int(n.split(".")[3]) for n in backbone if n.startswith("backbone.encoder.layers.")
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_trainable_count_matches_formula_and_only_those_get_grads(
    encoder, strategy, classifier, padded_batch
):
    module, cfg = classifier(f"model={encoder}", f"finetune={strategy}")
    expected = expected_trainable(strategy, cfg, module)
    instantiate(cfg.finetune).apply(module)
    assert trainable_report(module)["all"]["trainable"] == expected
    module(*padded_batch).logsumexp(-1).sum().backward()
    for name, param in module.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name


def test_bitfit_trains_only_biases(classifier):
    module, cfg = classifier("model=hybrid", "finetune=bitfit")
    instantiate(cfg.finetune).apply(module)
    trained = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trained and all(
        n.rsplit(".", 1)[-1].startswith("bias") or n == "head.weight" for n in trained
    )
    assert any("bias_hh_l0" in n for n in trained)  # LSTM biases count as biases


@pytest.mark.parametrize("n_layers", [0, 1, 2])
def test_partial_freezes_exactly_the_layers_below_n(n_layers, classifier):
    module, cfg = classifier(
        "model.n_layers=3", "finetune=partial", f"finetune.n_layers={n_layers}"
    )
    instantiate(cfg.finetune).apply(module)
    for i, layer in enumerate(module.backbone.encoder.layers):
        assert all(p.requires_grad == (i >= 3 - n_layers) for p in layer.parameters()), i
    assert not module.backbone.embed.weight.requires_grad
    assert module.backbone.norm.weight.requires_grad == (n_layers > 0)


def test_partial_rejects_more_layers_than_the_encoder_has(classifier):
    module, cfg = classifier("model.n_layers=2", "finetune=partial", "finetune.n_layers=3")
    with pytest.raises(ConfigError, match="finetune.n_layers=3"):
        instantiate(cfg.finetune).apply(module)


def test_unmatched_lora_targets_fail_with_the_key(classifier):
    module, cfg = classifier("model=bilstm", "finetune=lora", "finetune.targets=[attn.q]")
    with pytest.raises(ConfigError, match="finetune.targets"):
        instantiate(cfg.finetune).apply(module)
