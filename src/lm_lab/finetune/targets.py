"""Finding what a strategy acts on, by name and type, in any backbone.

Weight targets are the 2-D weights inside the backbone of `nn.Linear` (`<module>.weight`, e.g.
`attn.q`, `mlp.fc`), of the token `nn.Embedding` (`embed.weight`: sentiment and topic live in
word vectors, so LoRA on them adapts what a frozen encoder cannot; a learned position table,
`encoder.pos.embed`, is no target: `embed` must not reach it) and of `nn.LSTM`
(`<module>.weight_ih_l0`, `<module>.weight_hh_l0`); a pattern is a substring (shell wildcards
allowed) of the dotted name.
"""

from fnmatch import fnmatch

from torch import nn

from lm_lab.finetune.base import BACKBONE
from lm_lab.utils.errors import ConfigError

LSTM_WEIGHTS = ("weight_ih_l", "weight_hh_l")
TOKEN_EMBEDDING = f"{BACKBONE}embed"  # the one nn.Embedding that is a weight target


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch(name, f"*{pattern}*") for pattern in patterns)


def weight_targets(
    module: nn.Module, patterns: list[str], key: str, required: bool = True
) -> list[tuple[str, nn.Module, str]]:
    """(dotted name, owner module, weight attribute) of every backbone weight matching a pattern;
    none at all is a config error (`key` names the option) when `required`."""
    found = []
    for owner_name, owner in module.named_modules():
        if not owner_name.startswith(BACKBONE):
            continue
        if isinstance(owner, nn.Linear) or owner_name == TOKEN_EMBEDDING:
            weights = ["weight"]
        elif isinstance(owner, nn.LSTM):
            weights = [w for w in owner._flat_weights_names if w.startswith(LSTM_WEIGHTS)]
        else:
            continue
        found += [
            (f"{owner_name}.{w}", owner, w)
            for w in weights
            if matches(f"{owner_name}.{w}", patterns)
        ]
    if required and not found:
        raise ConfigError(
            f"{key}={list(patterns)}: matches no Linear, Embedding or LSTM weight in the model"
        )
    return found


def modules_of_type(module: nn.Module, type_names: list[str], key: str) -> list[nn.Module]:
    """Backbone modules whose class name is in `type_names` (e.g. SelfAttention, LSTMLayer)."""
    found = [
        m
        for name, m in module.named_modules()
        if name.startswith(BACKBONE) and type(m).__name__ in type_names
    ]
    if not found:
        raise ConfigError(f"{key}={list(type_names)}: no module of these types in the model")
    return found


def submodule(module: nn.Module, path: str, key: str) -> nn.Module:
    """module.<path>, e.g. backbone.encoder, or a config error naming `key`."""
    try:
        return module.get_submodule(path)
    except AttributeError as err:
        raise ConfigError(f"{key}={path}: no such submodule ({err})") from err
