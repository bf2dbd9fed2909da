"""Weights laid out for decoding on a CPU: each Linear and Embedding weight (out, in) stored as
the transpose of a contiguous (in, out) tensor.

A decoding step multiplies one row per sequence by every weight, and there MKL's one-row GEMM
reads an (in, out)-contiguous matrix at about twice the bandwidth of the (out, in) rows
`nn.Linear` keeps (SmolLM2-135M, one thread: 24 -> 30 tokens/s at batch 1, batch 8 and the
8 x 128 forward pass unchanged; docs/results.md). Values, shapes and every result stay the same
(the same products summed in the same order); only the strides change, so exporting, saving and
loading a state dict are unaffected. Training is left alone: the layout is applied where a
process only generates (generate.py, eval.py mode=sft, the benchmark).
"""

import torch
from torch import Tensor, nn


def decoding_layout(weight: Tensor) -> Tensor:
    """`weight` (out, in) with strides (1, out): the same values, read column by column."""
    return weight.t().contiguous().t()


def is_decoding_layout(weight: Tensor) -> bool:
    return weight.dim() == 2 and weight.stride() == (1, weight.shape[0])


@torch.no_grad()
def lay_out_for_decoding(module: nn.Module) -> nn.Module:
    """`module` with every Linear and Embedding weight in `decoding_layout`, in place; a tied
    weight (embedding = head) is laid out once. CPU only: cuBLAS reads either layout alike."""
    for sub in module.modules():
        weight = getattr(sub, "weight", None)
        if not isinstance(sub, nn.Linear | nn.Embedding) or not isinstance(weight, Tensor):
            continue
        if weight.device.type == "cpu" and not is_decoding_layout(weight):
            weight.data = decoding_layout(weight.data)
    return module
