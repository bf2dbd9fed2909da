"""`model.gradient_checkpointing`: the same gradients as without it, activations really
recomputed in backward while training, and never in eval, generation or forward_step."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lm_lab.encoders.backbone import Backbone
from lm_lab.encoders.base import LayerStack
from lm_lab.encoders.hybrid import HybridEncoder
from lm_lab.encoders.transformer import TransformerEncoder

VOCAB, PAD, D = 40, 0, 16
ENCODERS: dict[str, Callable[[bool], LayerStack]] = {
    "transformer": lambda gc: TransformerEncoder(
        d_model=D, n_layers=2, n_heads=2, dropout=0.1, gradient_checkpointing=gc
    ),
    "hybrid": lambda gc: HybridEncoder(
        d_model=D, pattern="LA", n_heads=2, dropout=0.1, gradient_checkpointing=gc
    ),
}


def build(name: str, gc: bool) -> Backbone:
    torch.manual_seed(0)
    return Backbone(ENCODERS[name](gc), VOCAB, PAD).train()


def grads(backbone: Backbone, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of a loss over the states, dropout on (seeded alike)."""
    torch.manual_seed(1)
    backbone(ids, pad_mask=ids == PAD, causal=True).square().mean().backward()
    return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}


def count_forwards(layer: nn.Module) -> list[int]:
    """A list that grows by one per call of `layer.forward` (the recomputation in backward
    runs no module hooks, so the method itself is wrapped)."""
    calls: list[int] = []
    forward = layer.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    layer.forward = counted
    return calls


@pytest.mark.parametrize("name", ENCODERS)
def test_same_gradients_with_and_without(name):
    ids = torch.randint(1, VOCAB, (3, 7))
    ids[0, 4:] = PAD
    plain, recomputed = grads(build(name, False), ids), grads(build(name, True), ids)
    assert plain.keys() == recomputed.keys() and len(plain) > 4
    for key, grad in plain.items():
        torch.testing.assert_close(recomputed[key], grad, atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("gc", [False, True])
def test_each_layer_runs_again_in_backward(name, gc):
    backbone = build(name, gc)
    calls = [count_forwards(layer) for layer in backbone.encoder.layers]
    loss = backbone(torch.randint(1, VOCAB, (2, 5)), causal=True).sum()
    assert [len(c) for c in calls] == [1, 1]
    loss.backward()
    assert [len(c) for c in calls] == ([2, 2] if gc else [1, 1])


def test_never_recomputes_in_eval_or_generation():
    backbone = build("transformer", True)
    calls = count_forwards(backbone.encoder.layers[0])
    ids = torch.randint(1, VOCAB, (2, 5))
    backbone.eval()
    backbone(ids).sum().backward()  # eval mode, gradients on: a probe's backward
    backbone.train()
    with torch.no_grad():
        backbone(ids)
    x = backbone.embed(ids)  # (B, T, D)
    backbone.encoder.forward_step(x, None, 0)[0].sum().backward()
    assert len(calls) == 2  # the two forwards; forward_step runs layer.step, never forward
