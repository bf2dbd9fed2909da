"""`prepare_for_decoding` changes how, not what: the same logits (within fp32 summation order)
and tokens, every matmul through oneDNN without a gradient and none with one, a tied head still
tied, a state dict that saves and loads, `onednn=False` back on F.linear, and generate.py's
model prepared so."""

import io

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.profiler import profile

from lm_lab.encoders.attention import SelfAttention
from lm_lab.generate import load_lm
from lm_lab.tasks.decoding import (
    decoding_layout,
    is_decoding_layout,
    onednn_linear,
    onednn_works,
    prepare_for_decoding,
)
from lm_lab.tasks.sampling import generate_ids
from tests.tasks.test_sampling import TOKENIZER, language_model
from tests.test_generate import trained_lm

LLAMA = ("model=transformer", "task=generate", "model.n_kv_heads=1", "model.positions=rope")
LLAMA += ("model.bias=false", "model.mlp=swiglu")
GPT = ("model=transformer", "task=generate", "model.bias=true")  # biases on every Linear
IDS = torch.tensor([TOKENIZER.encode("hello kid")])  # (1, 9)
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::linear"}  # MKL's, via F.linear or @
ONEDNN = "mkldnn::_linear_pointwise"

needs_onednn = pytest.mark.skipif(not onednn_works(), reason="this torch build has no oneDNN")


def weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Linear | nn.Embedding)]


def op_counts(fn) -> dict[str, int]:
    with profile() as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


def test_decoding_layout_keeps_values_and_shape_and_moves_the_strides():
    w = torch.arange(6.0).view(2, 3)  # (out, in)
    laid = decoding_layout(w)
    assert torch.equal(laid, w) and laid.stride() == (1, 2) and is_decoding_layout(laid)
    assert not is_decoding_layout(w)


@needs_onednn
def test_onednn_linear_equals_f_linear_with_bias_and_batch_dims():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 5), torch.randn(4, 5), torch.randn(4)
    with torch.no_grad():
        torch.testing.assert_close(onednn_linear(x, w, b), F.linear(x, w, b), atol=1e-5, rtol=0)
        laid = decoding_layout(w)
        torch.testing.assert_close(onednn_linear(x, laid, b), F.linear(x, w, b), atol=1e-5, rtol=0)


@needs_onednn
@pytest.mark.parametrize("overrides", [LLAMA, (*GPT, "model.tie_embeddings=false")])
def test_prepared_generation_is_unchanged_and_runs_every_matmul_on_onednn(compose, overrides):
    model = language_model(compose(*overrides))
    prompts = [TOKENIZER.encode("abc"), TOKENIZER.encode("hello kid")]
    with torch.no_grad():
        before, tokens = model(IDS), generate_ids(model, prompts, 16, temperature=0)
    prepare_for_decoding(model)
    assert all(is_decoding_layout(w) for w in weights(model))
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), before, atol=1e-5, rtol=0)
        ops = op_counts(lambda: model(IDS))
    assert not MATMULS & set(ops) and ops[ONEDNN] > 0
    assert torch.equal(generate_ids(model, prompts, 16, temperature=0), tokens)
    assert len(set(tokens.flatten().tolist())) > 2  # not a degenerate repeat


@needs_onednn
def test_with_a_gradient_the_prepared_model_trains_as_before(compose):
    plain = language_model(compose(*GPT))
    prepared = prepare_for_decoding(language_model(compose(*GPT)))
    for model in (plain, prepared):
        model.train(False)
        model(IDS).logsumexp(-1).sum().backward()
    for (name, a), (_, b) in zip(
        plain.named_parameters(), prepared.named_parameters(), strict=True
    ):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=name)
    assert ONEDNN not in op_counts(lambda: prepared(IDS).sum().backward())


@needs_onednn
def test_onednn_false_puts_f_linear_back(compose):
    model = prepare_for_decoding(language_model(compose(*GPT)))
    prepare_for_decoding(model, onednn=False)
    with torch.no_grad():
        ops = op_counts(lambda: model(IDS))
    assert ONEDNN not in ops and MATMULS & set(ops)
    assert all(is_decoding_layout(w) for w in weights(model))  # the layout stays


def test_a_tied_head_stays_tied(compose):
    model = prepare_for_decoding(language_model(compose(*LLAMA, "model.tie_embeddings=true")))
    assert model.backbone.lm_head is None and is_decoding_layout(model.backbone.embed.weight)


def test_a_prepared_state_dict_saves_and_loads_the_same_values(compose):
    model = language_model(compose(*LLAMA))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(prepare_for_decoding(model).state_dict(), buffer)
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


@pytest.mark.parametrize("onednn", [True, False])
def test_generate_py_loads_its_model_prepared(compose, tmp_path, onednn):
    path = trained_lm(compose, tmp_path, "char", batches=1)
    cfg = OmegaConf.create({"ckpt_path": str(path), "onednn": onednn})
    loaded = load_lm(cfg, torch.device("cpu"), None)
    assert weights(loaded) and all(is_decoding_layout(w) for w in weights(loaded))
    with torch.no_grad():
        ops = op_counts(lambda: loaded(torch.tensor([[1, 2, 3]])))
    on = onednn and onednn_works()
    assert (ONEDNN in ops) == on and bool(MATMULS & set(ops)) != on
