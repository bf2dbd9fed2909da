"""The fused q/k/v matmul computes what the three projections compute, is used only where they
are plain and frozen, follows every write to their weights, and the rope tables are built once
per doubling of the length, never once per generated token."""

import torch

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import ByteTokenizer
from lm_lab.encoders import positions
from lm_lab.encoders.attention import SelfAttention
from lm_lab.finetune.lora import LoRA
from lm_lab.tasks.sampling import generate_ids

LLAMA = ("task=generate", "tokenizer=byte", "model.n_layers=2", "model.n_heads=4")
LLAMA += ("model.n_kv_heads=2", "model.positions=rope", "model.bias=false")


def attention(bias: bool = True) -> SelfAttention:
    torch.manual_seed(0)
    return SelfAttention(16, 4, bias=bias, n_kv_heads=2).eval()


def test_fused_equals_the_separate_projections():
    x = torch.randn(2, 5, 16)
    for bias in (True, False):
        attn = attention(bias)
        separate = attn(x)  # grad on: the weights require it, so no fusion
        assert attn._fused is None
        with torch.no_grad():
            fused = attn(x)
        assert attn._fused is not None and attn._fused[1].shape == (16 + 8 + 8, 16)
        torch.testing.assert_close(fused, separate, atol=1e-6, rtol=0)


def test_the_fused_weight_follows_writes_to_q_k_v():
    """An optimizer step or a state-dict load writes the weights in place: the stack must be
    rebuilt, or generation after training would run the old weights."""
    attn, x = attention(), torch.randn(1, 3, 16)
    with torch.no_grad():
        attn(x)
        attn.v.weight.mul_(2.0)
        attn.k.bias.add_(1.0)
        fused = attn(x)
    torch.testing.assert_close(fused, attn(x), atol=1e-6, rtol=0)  # separate, grad on


def test_the_fused_weight_follows_a_fused_adamw_step():
    """Validation during training: a fused AdamW step writes the weights without moving their
    version counters, so the stack must be rebuilt after every optimizer step."""
    attn, x = attention(), torch.randn(1, 3, 16)
    with torch.no_grad():
        attn(x)  # the stack of the weights before the step
    optimizer = torch.optim.AdamW(attn.parameters(), lr=0.1, fused=True)
    attn(x).sum().backward()
    versions = [p._version for p in attn.parameters()]
    optimizer.step()
    assert [p._version for p in attn.parameters()] == versions  # why the count is needed
    with torch.no_grad():
        fused = attn(x)
    torch.testing.assert_close(fused, attn(x), atol=1e-6, rtol=0)  # separate, grad on


def test_no_fusion_under_lora_or_a_hook():
    attn, x = attention(), torch.randn(1, 3, 16)
    holder = torch.nn.Module()
    holder.backbone = torch.nn.Sequential(attn)
    LoRA(targets=["q"]).apply(holder)  # freezes q, k, v: only the parametrization blocks
    with torch.no_grad():
        attn(x)
    assert attn._fused is None
    plain = attention()
    plain.k.register_forward_hook(lambda m, i, out: out * 0)
    with torch.no_grad():
        plain(x)
    assert plain._fused is None


def test_rope_tables_are_built_once_per_doubling_not_per_step(compose, monkeypatch):
    """A 4-token prompt and 40 greedy tokens feed positions 0..42 (the last token is never fed
    back): tables of 8, 18, 38 and 78 rows (twice the length reached at 4, 9, 19, 39), shared
    by both layers: 4 builds, not one per layer and step."""
    torch.manual_seed(0)
    lm = build_module(compose(*LLAMA), ByteTokenizer(), None).eval()
    built = []
    angles = positions._angles
    monkeypatch.setattr(
        positions, "_angles", lambda n, *a, **k: built.append(n) or angles(n, *a, **k)
    )
    with torch.no_grad():
        generate_ids(lm, [[5, 6, 7, 8]], 40, temperature=0)
    assert built == [8, 18, 38, 78]
