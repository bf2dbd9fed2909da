"""LoRA: a no-op at init, a change after one step, exact merge, and LSTM weights as targets."""

import pytest
import torch
from hydra.utils import instantiate

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
