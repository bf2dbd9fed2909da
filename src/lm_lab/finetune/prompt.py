"""Soft prompts (Lester et al., 2021): P trainable vectors prepended to the encoder's input.

Hooks on the encoder prepend the prompt to x (B, T, D) -> (B, P + T, D), extend pad_mask with
P real (False) positions, and cut the P prompt positions off the output again: tokens attend to
the prompt (or read it through the recurrence), while pooling and the head still see (B, T, D)
with the original pad_mask, so padding is handled exactly as without prompts. Works for every
encoder: right padding stays right padding.

Generation calls the encoder's `forward_step`, which no hook sees, so that is wrapped too: the
first chunk gets the prompt (after each row's left padding, where its real tokens start) and
every later chunk sits P columns further right, so positions and KV caches count the prompt.
"""

from types import MethodType
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


def _prompted_step(
    encoder: nn.Module, x: Tensor, state: Any, offset: int, n_pad: Tensor | None = None
) -> tuple[Tensor, Any]:
    """The class's `forward_step` on x (B, t, D) as if the prompt came before its column 0."""
    P = encoder.soft_prompt.shape[0]
    if state is not None:  # the prompt already sits in the state
        return type(encoder).forward_step(encoder, x, state, offset + P, n_pad)
    B, t, _ = x.shape
    prompt = encoder.soft_prompt.expand(B, -1, -1).to(x.dtype)  # (B, P, D)
    columns = torch.arange(P + t, device=x.device).expand(B, -1)  # (B, P + t)
    pads = torch.zeros(B, 1, dtype=torch.long, device=x.device) if n_pad is None else n_pad[:, None]
    # row b reads [its pad columns, the prompt, its tokens] from cat([prompt, x])
    source = torch.where(columns < pads, columns + P, columns)  # (B, P + t)
    source = torch.where((columns >= pads) & (columns < pads + P), columns - pads, source)
    x = torch.cat([prompt, x], 1).gather(1, source[:, :, None].expand(-1, -1, x.shape[2]))
    y, state = type(encoder).forward_step(encoder, x, None, offset, n_pad)  # (B, P + t, D)
    keep = torch.arange(t, device=x.device) + P * (torch.arange(t, device=x.device) >= pads)
    return y.gather(1, keep[:, :, None].expand(-1, -1, y.shape[2])), state  # (B, t, D)


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
        encoder.forward_step = MethodType(_prompted_step, encoder)  # a deepcopy rebinds it
        if encoder.max_len is not None:  # learned positions: the prompt takes P of them
            encoder.max_len -= self.length
