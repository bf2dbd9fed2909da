"""A model prepared for a process that only generates, on a CPU: weights in the layout one-row
products read fastest, and its matmuls through oneDNN instead of MKL.

Both change how the same fp32 products are computed, not what: shapes, values and state dicts
stay as they were. Measured on SmolLM2-135M, one thread, this repository's AMD EPYC
(docs/results.md):
- the layout (each Linear and Embedding weight (out, in) stored as the transpose of a
  contiguous (in, out) tensor) lets MKL's one-row GEMM read ~2x the bytes per second: batch-1
  greedy decoding 24 -> 30 tokens/s, the 8 x 128 forward pass unchanged;
- oneDNN's fp32 kernels run 1.5x MKL's on this CPU at every batch size. They sum in another
  order, so logits move by ~1e-5 relative (3.9e-4 on SmolLM2's 8 x 128 logits, both sides as
  far from float64 as each other). That is why they are used where a process only generates
  (generate.py, eval.py mode=sft) and never in training or scoring, whose logits match
  transformers' exactly.
"""

from types import MethodType

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def decoding_layout(weight: Tensor) -> Tensor:
    """`weight` (out, in) with strides (1, out): the same values, read column by column."""
    return weight.t().contiguous().t()


def is_decoding_layout(weight: Tensor) -> bool:
    return weight.dim() == 2 and weight.stride() == (1, weight.shape[0])


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear (..., in) -> (..., out) through oneDNN where it can run: no gradient (the op
    has no backward), fp32 on the CPU; elsewhere F.linear itself."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_works() -> bool:
    """oneDNN is in this torch build and its linear equals F.linear on a small case."""
    x, w = torch.randn(3, 5), torch.randn(4, 5)
    try:
        with torch.no_grad():
            return torch.allclose(onednn_linear(x, w), F.linear(x, w), atol=1e-5)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _onednn_forward(self: nn.Linear, x: Tensor) -> Tensor:
    return onednn_linear(x, self.weight, self.bias)


def _layout_pending(sub: nn.Module) -> bool:
    weight = getattr(sub, "weight", None)
    if not isinstance(sub, nn.Linear | nn.Embedding) or not isinstance(weight, Tensor):
        return False
    return weight.device.type == "cpu" and not is_decoding_layout(weight)


@torch.no_grad()
def prepare_for_decoding(module: nn.Module, onednn: bool = True) -> nn.Module:
    """`module`, in place, with every CPU Linear and Embedding weight in `decoding_layout` (a
    tied embedding = head once) and, with `onednn` where it works, every plain Linear and every
    module whose own matmul is its `linear_kernel` (fused q/k/v, the head) through oneDNN;
    `onednn=False` puts F.linear back (the benchmark times both on one loaded model)."""
    onednn = onednn and onednn_works()
    kernel = onednn_linear if onednn else F.linear
    for sub in module.modules():
        if _layout_pending(sub):
            sub.weight.data = decoding_layout(sub.weight.data)
        if type(sub) is nn.Linear:
            sub.__dict__.pop("forward", None)  # nn.Linear.forward again
            if onednn:
                sub.forward = MethodType(_onednn_forward, sub)
        elif hasattr(sub, "linear_kernel"):
            sub.linear_kernel = kernel
    return module
