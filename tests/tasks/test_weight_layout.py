"""The decoding layout changes strides only: the same values, the same tokens, a tied head still
tied, a state dict that saves and loads, and generate.py's model is laid out so."""

import io

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lm_lab.encoders.attention import SelfAttention
from lm_lab.generate import load_lm
from lm_lab.tasks.sampling import generate_ids
from lm_lab.tasks.weight_layout import decoding_layout, is_decoding_layout, lay_out_for_decoding
from tests.tasks.test_sampling import TOKENIZER, language_model
from tests.test_generate import trained_lm

LLAMA = ("model=transformer", "task=generate", "model.n_kv_heads=1", "model.positions=rope")
LLAMA += ("model.bias=false", "model.mlp=swiglu")


def weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Linear | nn.Embedding)]


def test_decoding_layout_keeps_values_and_shape_and_moves_the_strides():
    w = torch.arange(6.0).view(2, 3)  # (out, in)
    laid = decoding_layout(w)
    assert torch.equal(laid, w) and laid.stride() == (1, 2) and is_decoding_layout(laid)
    assert not is_decoding_layout(w)


@pytest.mark.parametrize("tie", [True, False])
def test_generation_is_unchanged_and_every_weight_is_laid_out(compose, tie):
    model = language_model(compose(*LLAMA, f"model.tie_embeddings={tie}"))
    prompts = [TOKENIZER.encode("abc"), TOKENIZER.encode("hello kid")]
    ids = torch.tensor([TOKENIZER.encode("hello kid")])  # (1, 9)
    with torch.no_grad():
        before, tokens = model(ids), generate_ids(model, prompts, 16, temperature=0)
    lay_out_for_decoding(model)
    assert all(is_decoding_layout(w) for w in weights(model))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before, atol=1e-5, rtol=0)
    assert torch.equal(generate_ids(model, prompts, 16, temperature=0), tokens)
    assert len(set(tokens.flatten().tolist())) > 2  # not a degenerate repeat
    assert tie == (model.backbone.lm_head is None)  # tied: the embedding is the head


def test_a_laid_out_state_dict_saves_and_loads_the_same_values(compose):
    model = language_model(compose(*LLAMA))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(lay_out_for_decoding(model).state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    fresh = language_model(compose(*LLAMA))
    fresh.load_state_dict(loaded)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in reference.items())


def test_the_fused_qkv_stack_is_in_the_decoding_layout():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, bias=False, n_kv_heads=2).eval()
    with torch.no_grad():
        attn(torch.randn(1, 3, 16))
    stack = attn._fused[1]  # (16 + 8 + 8, 16)
    assert is_decoding_layout(stack)
    assert torch.equal(stack, torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))


def test_generate_py_loads_its_model_laid_out(compose, tmp_path):
    path = trained_lm(compose, tmp_path, "char", batches=1)
    loaded = load_lm(OmegaConf.create({"ckpt_path": str(path)}), torch.device("cpu"), None)
    assert weights(loaded) and all(is_decoding_layout(w) for w in weights(loaded))
