"""Soft prompts (Lester et al., 2021): P trainable vectors prepended to the encoder's input.

Hooks on the encoder prepend the prompt to x (B, T, D) -> (B, P + T, D), extend pad_mask with
P real (False) positions, and cut the P prompt positions off the output again: tokens attend to
the prompt (or read it through the recurrence), while pooling and the head still see (B, T, D)
with the original pad_mask, so padding is handled exactly as without prompts. Works for every
encoder: right padding stays right padding.
"""

from typing import Any

import torch
from torch import Tensor, nn

from lm_lab.finetune.base import Strategy
from lm_lab.finetune.targets import submodule


def _prepend_prompt(
    encoder: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    x, rest = args[0], list(args[1:])
    B = x.shape[0]
    prompt = encoder.soft_prompt.expand(B, -1, -1).to(x.dtype)  # (B, P, D)
    x = torch.cat([prompt, x], dim=1)  # (B, P + T, D)
    pad_mask = rest[0] if rest else kwargs.get("pad_mask")
    if pad_mask is not None:
        real = pad_mask.new_zeros(B, prompt.shape[1])  # (B, P) never padding
        pad_mask = torch.cat([real, pad_mask], dim=1)  # (B, P + T)
        if rest:
            rest[0] = pad_mask
        else:
            kwargs["pad_mask"] = pad_mask
    return (x, *rest), kwargs


def _drop_prompt(encoder: nn.Module, args: Any, kwargs: Any, output: Tensor) -> Tensor:
    return output[:, encoder.soft_prompt.shape[0] :]  # (B, T, D)


class Prompt(Strategy):
    """`length` prompt vectors as `<encoder>.soft_prompt` (P, D); only they and the head train."""

    def __init__(
        self, length: int = 8, init_std: float = 0.02, encoder_path: str = "backbone.encoder"
    ) -> None:
        self.length, self.init_std, self.encoder_path = length, init_std, encoder_path

    def attach(self, module: nn.Module) -> None:
        encoder = submodule(module, self.encoder_path, "finetune.encoder_path")
        encoder.soft_prompt = nn.Parameter(
            torch.randn(self.length, encoder.d_model) * self.init_std
        )
        encoder.register_forward_pre_hook(_prepend_prompt, with_kwargs=True)
        encoder.register_forward_hook(_drop_prompt, with_kwargs=True)
