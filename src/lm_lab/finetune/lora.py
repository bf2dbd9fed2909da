"""LoRA (Hu et al., 2021): W + (alpha / r) B A on chosen weights, A (r, in) random, B (out, r) zero.

Applied with `torch.nn.utils.parametrize`, so it reaches attention and MLP Linears and the
`weight_ih` / `weight_hh` matrices inside `nn.LSTM` alike, and merges into them exactly.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm_lab.finetune.base import Reparam, Strategy, attach_reparam
from lm_lab.finetune.targets import weight_targets


class LoRAUpdate(Reparam):
    """W -> W + scale * B @ drop(A); zero at init because B is zero, so the model is unchanged.
    Dropout acts on A's entries: a parametrization sees the weight, not the layer's input.

    Dropout is training noise on the update, never part of it: `update` (what `merge` folds in
    and `unmerge` takes out) is the deterministic W + scale * B @ A, in any mode."""

    def __init__(
        self, weight: Tensor, rank: int, alpha: float, dropout: float, rslora: bool
    ) -> None:
        super().__init__()
        d_out, d_in = weight.shape
        self.lora_A = nn.Parameter(torch.empty(rank, d_in))  # (r, in)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))  # (out, r)
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        self.dropout = dropout

    def forward(self, weight: Tensor) -> Tensor:
        if self.merged or not (self.training and self.dropout):
            return super().forward(weight)
        A = F.dropout(self.lora_A, self.dropout)  # (r, in)
        return weight + self.scale * self.lora_B @ A

    def delta(self) -> Tensor:
        return self.scale * self.lora_B @ self.lora_A  # (out, in)

    def update(self, weight: Tensor) -> Tensor:
        return weight + self.delta()

    def revert(self, weight: Tensor) -> Tensor:
        return weight - self.delta()


class LoRA(Strategy):
    """Low-rank updates on the weights matching `targets`; only they and the head train."""

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        rslora: bool = False,
        targets: list[str] | None = None,
    ) -> None:
        self.rank, self.alpha, self.dropout, self.rslora = rank, alpha, dropout, rslora
        self.targets = list(targets or ["attn.q", "attn.v", "weight_ih", "weight_hh"])

    def attach(self, module: nn.Module) -> None:
        for _, owner, weight in weight_targets(module, self.targets, "finetune.targets"):
            update = LoRAUpdate(
                getattr(owner, weight), self.rank, self.alpha, self.dropout, self.rslora
            )
            attach_reparam(owner, weight, update)
