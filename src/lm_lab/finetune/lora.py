"""LoRA (Hu et al., 2021): W + (alpha / r) B A on chosen weights, A (r, in) random, B (out, r) zero.

Applied with `torch.nn.utils.parametrize`, so it reaches attention and MLP Linears, the token
embedding and the `weight_ih` / `weight_hh` matrices inside `nn.LSTM` alike, merges into them
exactly, and keeps one set of state-dict keys (`<w>.parametrizations.weight.0.lora_A`). An
adapted `nn.Linear` becomes a `LoRALinear`, which computes y = x W^T + s (x A^T) B^T on the
activations as peft does: rebuilding W + s B A every forward also made autograd compute the
full (out, in) gradient of the frozen W, one extra matmul per adapted Linear per step.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lm_lab.finetune.base import Reparam, Strategy, attach_reparam
from lm_lab.finetune.targets import weight_targets


class LoRAUpdate(Reparam):
    """W -> W + scale * B @ drop(A); zero at init because B is zero, so the model is unchanged.
    Dropout acts on A's entries (on either path, so both draw the same mask).

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
        return weight + self.scale * self.lora_B @ self._noisy_A()

    def low_rank(self, x: Tensor) -> Tensor:
        """scale * (x A^T) B^T of x (..., in): the update applied to activations, (..., out)."""
        return F.linear(F.linear(x, self._noisy_A()), self.scale * self.lora_B)  # B scaled: small

    def _noisy_A(self) -> Tensor:
        if self.training and self.dropout:
            return F.dropout(self.lora_A, self.dropout)  # (r, in)
        return self.lora_A

    def delta(self) -> Tensor:
        return self.scale * self.lora_B @ self.lora_A  # (out, in)

    def update(self, weight: Tensor) -> Tensor:
        return weight + self.delta()

    def revert(self, weight: Tensor) -> Tensor:
        return weight - self.delta()


class LoRALinear(nn.Linear):
    """An `nn.Linear` whose weight may carry a `LoRAUpdate`: while it is the weight's one
    unmerged parametrization, the update runs on the activations and the full weight is never
    built; otherwise (merged, stacked with another strategy, parametrization removed by the
    export) it is a plain Linear on `self.weight`."""

    def forward(self, x: Tensor) -> Tensor:
        update = self._update()
        if update is None:
            return F.linear(x, self.weight, self.bias)
        frozen = self.parametrizations.weight.original  # (out, in), without the update
        # in place: one (..., out) tensor fewer per layer; the matmul's backward needs no output
        return F.linear(x, frozen, self.bias).add_(update.low_rank(x))  # (..., out)

    def _update(self) -> LoRAUpdate | None:
        if not parametrize.is_parametrized(self, "weight"):
            return None
        plist = self.parametrizations.weight
        if len(plist) == 1 and isinstance(plist[0], LoRAUpdate) and not plist[0].merged:
            return plist[0]
        return None


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
            if type(owner) is nn.Linear:  # parametrize then subclasses LoRALinear
                owner.__class__ = LoRALinear
            update = LoRAUpdate(
                getattr(owner, weight), self.rank, self.alpha, self.dropout, self.rslora
            )
            attach_reparam(owner, weight, update)
