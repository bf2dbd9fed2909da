"""LoRA: a no-op at init, a change after one step, exact merge, and LSTM weights as targets."""

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.finetune.lora import LoRA, LoRAUpdate

ENCODERS = ["transformer", "bilstm", "hybrid"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_lora_is_a_no_op_at_init(encoder, classifier, padded_batch):
    module, cfg = classifier(f"model={encoder}", "finetune=lora")
    ids, pad_mask = padded_batch
    before = module(ids, pad_mask)
    instantiate(cfg.finetune).apply(module)
    assert torch.equal(module(ids, pad_mask), before)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_lora_changes_outputs_after_one_step(encoder, classifier, padded_batch):
    module, cfg = classifier(f"model={encoder}", "finetune=lora")
    instantiate(cfg.finetune).apply(module)
    ids, pad_mask = padded_batch
    before = module(ids, pad_mask).detach()
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    module(ids, pad_mask).logsumexp(-1).sum().backward()
    opt.step()
    # the head alone moves too; compare backbone states so only LoRA can explain a change
    assert not torch.allclose(
        module.backbone(ids, pad_mask), _frozen_backbone(module, ids, pad_mask)
    )
    assert not torch.allclose(module(ids, pad_mask), before)


def _frozen_backbone(module, ids, pad_mask):
    """The backbone output with every LoRA update merged out (B = 0)."""
    saved = {}
    for name, param in module.named_parameters():
        if "lora_B" in name:
            saved[name] = param.detach().clone()
            param.data.zero_()
    out = module.backbone(ids, pad_mask)
    for name, param in module.named_parameters():
        if name in saved:
            param.data.copy_(saved[name])
    return out


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("strategy", ["lora", "ia3"])
def test_merged_equals_unmerged(encoder, strategy, classifier, padded_batch):
    module, cfg = classifier(f"model={encoder}", f"finetune={strategy}")
    ft = instantiate(cfg.finetune)
    ft.apply(module)
    with torch.no_grad():  # a trained-looking update, so merging has something to fold in
        for name, param in module.named_parameters():
            if "lora_B" in name or "ia3_" in name:
                param.add_(0.1 * torch.randn_like(param))
    ids, pad_mask = padded_batch
    unmerged = module(ids, pad_mask)
    ft.merge(module)
    assert torch.allclose(module(ids, pad_mask), unmerged, atol=1e-5)
    ft.unmerge(module)
    assert torch.allclose(module(ids, pad_mask), unmerged, atol=1e-5)


def test_lora_reaches_the_lstm_weights(classifier):
    module, cfg = classifier("model=bilstm", "finetune=lora", "finetune.targets=[weight_hh]")
    instantiate(cfg.finetune).apply(module)
    lora = [n for n, p in module.named_parameters() if p.requires_grad and "lora_" in n]
    # 2 layers x (fwd, bwd) x weight_hh_l0 x (A, B)
    assert len(lora) == 8 and all("weight_hh_l0" in n for n in lora)


def test_rslora_scales_by_the_square_root_of_the_rank(classifier):
    module, cfg = classifier("finetune=lora", "finetune.rank=4", "finetune.rslora=true")
    instantiate(cfg.finetune).apply(module)
    scales = {m.scale for m in module.modules() if hasattr(m, "lora_A")}
    assert scales == {cfg.finetune.alpha / 2}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_lora_on_the_word_vectors(encoder, classifier, padded_batch):
    """`embed` as a target: a no-op at init, rank x (V + D) new weights, exact merge."""
    module, cfg = classifier(f"model={encoder}", "finetune=lora", "finetune.targets=[embed]")
    vocab, d = module.backbone.embed.weight.shape
    ids, pad_mask = padded_batch
    before = module(ids, pad_mask)
    ft = instantiate(cfg.finetune)
    ft.apply(module)
    assert torch.equal(module(ids, pad_mask), before)
    lora = {n: p.numel() for n, p in module.named_parameters() if "lora_" in n}
    assert all(n.startswith("backbone.embed.") for n in lora)
    assert sum(lora.values()) == cfg.finetune.rank * (vocab + d)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.add_(0.1 * torch.randn_like(param))
    tuned = module(ids, pad_mask)
    assert not torch.allclose(tuned, before)
    ft.merge(module)
    assert torch.allclose(module(ids, pad_mask), tuned, atol=1e-5)


def test_lora_update_is_alpha_over_rank_times_b_a():
    """rank 4, alpha 8, A and B all ones: B @ A is 4 everywhere, the update 8 / 4 * 4 = 8.0
    (alpha alone would give 32, rslora 8 / sqrt(4) * 4 = 16)."""
    for rslora, expected in ((False, 8.0), (True, 16.0)):
        module = torch.nn.Module()
        module.backbone = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
        torch.nn.init.zeros_(module.backbone[0].weight)
        LoRA(rank=4, alpha=8.0, rslora=rslora, targets=["weight"]).apply(module)
        with torch.no_grad():
            for name, param in module.named_parameters():
                if "lora_" in name:
                    param.fill_(1.0)
        assert torch.equal(module.backbone[0].weight, torch.full((2, 3), expected))


def test_lora_dropout_never_gets_merged(classifier, padded_batch):
    """Merging in training mode folds the update without dropout: merged eval outputs equal the
    unmerged ones, and unmerging gives the original weights back (to fp32 rounding)."""
    module, cfg = classifier("finetune=lora", "finetune.dropout=0.5", "task.head_dropout=0")
    ft = instantiate(cfg.finetune)
    ft.apply(module)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.add_(0.5 * torch.randn_like(param))
    originals = {n: p.detach().clone() for n, p in module.named_parameters() if "original" in n}
    unmerged = module.eval()(*padded_batch)
    module.train()
    ft.merge(module)
    merged = module.eval()(*padded_batch)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    module.train()
    ft.unmerge(module)
    for name, param in module.named_parameters():
        if name in originals:
            torch.testing.assert_close(param, originals[name], atol=1e-6, rtol=0)
    torch.testing.assert_close(module.eval()(*padded_batch), unmerged, atol=1e-5, rtol=0)


def test_embed_target_is_the_token_embedding_only(classifier):
    """With positions=learned the position table is an nn.Embedding named `...pos.embed`: the
    `embed` target must leave it alone."""
    module, cfg = classifier(
        "model=transformer", "model.positions=learned", "finetune=lora", "finetune.targets=[embed]"
    )
    instantiate(cfg.finetune).apply(module)
    lora = {n for n, p in module.named_parameters() if "lora_" in n}
    assert lora == {
        "backbone.embed.parametrizations.weight.0.lora_A",
        "backbone.embed.parametrizations.weight.0.lora_B",
    }


def _one_linear(rank: int = 1, alpha: float = 2.0, dropout: float = 0.0) -> torch.nn.Module:
    """backbone = Linear(2, 1), W = [[1, 2]], b = [0.5], LoRA A = [[1, -1]], B = [[3]]: the
    scale is alpha / rank = 2."""
    module = torch.nn.Module()
    module.backbone = torch.nn.Sequential(torch.nn.Linear(2, 1))
    with torch.no_grad():
        module.backbone[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        module.backbone[0].bias.fill_(0.5)
    LoRA(rank=rank, alpha=alpha, dropout=dropout, targets=["weight"]).apply(module)
    update = module.backbone[0].parametrizations.weight[0]
    with torch.no_grad():
        update.lora_A.copy_(torch.tensor([[1.0, -1.0]]))
        update.lora_B.fill_(3.0)
    return module


def test_lora_runs_on_the_activations_as_peft_does(monkeypatch):
    """x = [2, 1]: x W^T + b = 4.5, s (x A^T) B^T = 2 * 1 * 3 = 6, y = 10.5; merged, W becomes
    W + s B A = [7, -4] and gives 10.5 too. The full weight is never built while unmerged."""
    module = _one_linear()
    built = []
    monkeypatch.setattr(LoRAUpdate, "update", lambda self, w: built.append(w) or w)
    y = module.backbone(torch.tensor([[2.0, 1.0]]))
    assert y.item() == 10.5 and built == []
    monkeypatch.undo()
    LoRA().merge(module)
    assert torch.equal(module.backbone[0].weight, torch.tensor([[7.0, -4.0]]))
    assert module.backbone(torch.tensor([[2.0, 1.0]])).item() == 10.5


def test_lora_gradients_reach_a_and_b_only():
    """dy/dA = s B x = 2 * 3 * [2, 1] = [12, 6]; dy/dB = s (x A^T) = 2; the frozen W gets no
    gradient at all (peft's cost: no (out, in) weight gradient per step)."""
    module = _one_linear()
    module.backbone(torch.tensor([[2.0, 1.0]])).sum().backward()
    update = module.backbone[0].parametrizations.weight[0]
    assert torch.equal(update.lora_A.grad, torch.tensor([[12.0, 6.0]]))
    assert torch.equal(update.lora_B.grad, torch.tensor([[2.0]]))
    assert module.backbone[0].parametrizations.weight.original.grad is None


@pytest.mark.parametrize("training", [False, True])
def test_the_activation_path_equals_the_parametrized_weight(training):
    """With dropout 0.5 on A: the same seed draws the same mask on either path, so the layer
    equals x (W + s B drop(A))^T + b, the parametrization's weight, in train and eval mode."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)
    module = torch.nn.Module()
    module.backbone = torch.nn.Sequential(layer)
    LoRA(rank=3, alpha=6.0, dropout=0.5, targets=["weight"]).apply(module)
    with torch.no_grad():
        layer.parametrizations.weight[0].lora_B.normal_()
    module.train(training)
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    fast = layer(x)
    torch.manual_seed(1)
    parametrized = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(fast, parametrized, atol=1e-6, rtol=0)
    if training:  # dropout really acted: eval mode differs
        assert not torch.allclose(fast, module.eval().backbone(x))
