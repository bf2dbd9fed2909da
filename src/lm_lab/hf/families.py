"""The pretrained families lm_lab reads and writes: config.json <-> `model.*` keys, and each
Hugging Face tensor <-> the lm_lab tensors it holds.

A `Rule` ties one Hugging Face tensor to one or more lm_lab tensors: `split` cuts it into them
on import (GPT-2's Conv1D is transposed, its fused c_attn and GPT-NeoX's per-head interleaved
query_key_value are cut into q, k, v), `join` puts them back together on export.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lm_lab.utils.errors import ConfigError

TARGET = "lm_lab.encoders.transformer.TransformerEncoder"
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "gpt_neox")
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
ACTIVATIONS |= {"gelu_fast": "gelu_tanh"}


@dataclass(frozen=True)
class Rule:
    """One Hugging Face tensor `hf` and the lm_lab backbone tensors `lm` it splits into;
    `hf=None`: the family has no such tensor, and the lm_lab one is loaded as zeros."""

    hf: str | None
    lm: tuple[str, ...]
    split: Callable[[Tensor], list[Tensor]] = lambda t: [t]
    join: Callable[[list[Tensor]], Tensor] = lambda ts: ts[0]


def _transposed(hf: str, lm: str) -> Rule:
    return Rule(hf, (lm,), lambda t: [t.T], lambda ts: ts[0].T.contiguous())


def _fused_conv1d(hf: str, lms: tuple[str, ...]) -> Rule:
    """GPT-2's c_attn: a Conv1D (D, 3D), i.e. [q | k | v] along its output columns."""
    if hf.endswith("bias"):
        return Rule(hf, lms, lambda t: list(t.chunk(3)), lambda ts: torch.cat(ts))
    return Rule(hf, lms, lambda t: list(t.T.chunk(3)), lambda ts: torch.cat(ts).T.contiguous())


def _interleaved(hf: str, lms: tuple[str, ...], n_heads: int) -> Rule:
    """GPT-NeoX's query_key_value: rows ordered (head, q|k|v, head dim)."""

    def split(t: Tensor) -> list[Tensor]:
        per_head = t.reshape(n_heads, 3, -1, *t.shape[1:])  # (H, 3, Dh[, D])
        return [per_head[:, j].reshape(-1, *t.shape[1:]) for j in range(3)]

    def join(ts: list[Tensor]) -> Tensor:
        heads = [x.reshape(n_heads, -1, *x.shape[1:]) for x in ts]  # (H, Dh[, D]) each
        return torch.stack(heads, 1).reshape(-1, *ts[0].shape[1:])

    return Rule(hf, lms, split, join)


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """rope_theta, rope_scaling and rotary fraction from either config layout: transformers 5's
    `rope_parameters` or the older `rope_theta` / `rope_scaling` / `rotary_pct` keys."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    theta = params.pop("rope_theta", None) or hf.get("rope_theta") or hf.get("rotary_emb_base")
    fraction = params.pop("partial_rotary_factor", None) or hf.get("rotary_pct") or 1.0
    fraction = hf.get("partial_rotary_factor") or fraction
    if kind not in ("default", "llama3"):
        raise ConfigError(f"rope_scaling type {kind!r} is not supported (default, llama3)")
    scaling = None
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        scaling = {"type": "llama3"} | {k: params[k] for k in keys}
    return {
        "rope_theta": float(theta or 10000.0),
        "rope_scaling": scaling,
        "rotary_fraction": fraction,
    }


def _reject(hf: dict[str, Any], **bad: Any) -> None:
    """Unsupported options: each key whose value in config.json is not the one we can run."""
    for key, ok in bad.items():
        value = hf.get(key)
        if value is not None and value != ok:
            raise ConfigError(
                f"config.json {key}={value!r} is not supported by lm_lab (needs {ok!r})"
            )


def _size(hf: dict[str, Any], key: str) -> int:
    """A size config.json must give (transformers' class defaults are no guide to the weights)."""
    value = hf.get(key)
    if value is None:
        raise ConfigError(f"config.json has no {key}; a {hf['model_type']} config.json sets it")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config.json {key}={value!r}: must be a positive integer")
    return value


def model_config(hf: dict[str, Any]) -> dict[str, Any]:
    """lm_lab `model.*` keys of a config.json; one-line errors for what lm_lab cannot run."""
    kind = hf.get("model_type")
    if kind not in FAMILIES:
        raise ConfigError(
            f"config.json model_type={kind!r} is not supported; lm_lab loads {', '.join(FAMILIES)}"
        )
    _size(hf, "vocab_size")
    common = {"_target_": TARGET, "dropout": 0.0, "d_ff": None, "n_kv_heads": None}
    if kind == "gpt2":
        _reject(hf, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False)
        _reject(hf, reorder_and_upcast_attn=False)
        act = hf.get("activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise ConfigError(f"config.json activation_function={act!r} is not supported")
        return common | {
            "d_model": _size(hf, "n_embd"),
            "n_layers": _size(hf, "n_layer"),
            "n_heads": _size(hf, "n_head"),
            "d_ff": hf.get("n_inner"),
            "positions": "learned",
            "max_len": _size(hf, "n_positions"),
            "bias": True,
            "norm": "layernorm",
            "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
            "mlp": ACTIVATIONS[act],
            "tie_embeddings": hf.get("tie_word_embeddings", True),
        }
    heads, width = _size(hf, "num_attention_heads"), _size(hf, "hidden_size")
    _reject(hf, head_dim=width // heads)
    base = common | {
        "d_model": width,
        "n_layers": _size(hf, "num_hidden_layers"),
        "n_heads": heads,
        "d_ff": _size(hf, "intermediate_size"),
        "positions": "rope",
        "max_len": hf.get("max_position_embeddings", 2048),
        "tie_embeddings": hf.get("tie_word_embeddings", kind != "gpt_neox"),
        **_rope(hf),
    }
    if kind == "gpt_neox":
        act = hf.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise ConfigError(f"config.json hidden_act={act!r} is not supported")
        return base | {
            "bias": True,
            "qkv_bias": bool(hf.get("attention_bias", True)),  # the dense bias: see _neox_rules
            "norm": "layernorm",
            "norm_eps": hf.get("layer_norm_eps", 1e-5),
            "mlp": ACTIVATIONS[act],
            "parallel_residual": hf.get("use_parallel_residual", True),
        }
    _reject(hf, hidden_act="silu", mlp_bias=False, attention_bias=False)
    window = hf.get("sliding_window") if hf.get("use_sliding_window", kind == "mistral") else None
    if window is not None and window < base["max_len"]:
        raise ConfigError(
            f"config.json sliding_window={window} < max_position_embeddings={base['max_len']}: "
            "sliding-window attention is not supported"
        )
    return base | {
        "bias": False,
        "qkv_bias": kind == "qwen2",
        "norm": "rmsnorm",
        "norm_eps": hf.get("rms_norm_eps", 1e-6),
        "mlp": "swiglu",
        "n_kv_heads": hf.get("num_key_value_heads") or heads,
    }


def _layer(i: int) -> str:
    return f"encoder.layers.{i}."


def rules(hf: dict[str, Any], model: dict[str, Any]) -> list[Rule]:
    """Every tensor of the family's checkpoint, mapped onto backbone keys (without `backbone.`);
    an untied output head (`lm_head`, NeoX's `embed_out`) is one more tensor in every family."""
    kind = hf["model_type"]
    build = {"gpt2": _gpt2_rules, "gpt_neox": _neox_rules}.get(kind, _llama_rules)
    out = build(hf, model)
    if not model["tie_embeddings"]:
        head = "embed_out.weight" if kind == "gpt_neox" else "lm_head.weight"
        out += [Rule(head, ("lm_head.weight",))]
    return out


def _gpt2_rules(hf: dict[str, Any], model: dict[str, Any]) -> list[Rule]:
    p = "transformer."
    out = [Rule(p + "wte.weight", ("embed.weight",))]
    out += [Rule(p + "wpe.weight", ("encoder.pos.embed.weight",))]
    for i in range(model["n_layers"]):
        h, lm = f"{p}h.{i}.", _layer(i)
        qkv = tuple(f"{lm}attn.{x}" for x in "qkv")
        for w in ("weight", "bias"):
            out += [
                Rule(f"{h}ln_1.{w}", (f"{lm}ln1.{w}",)),
                Rule(f"{h}ln_2.{w}", (f"{lm}ln2.{w}",)),
            ]
            out += [_fused_conv1d(f"{h}attn.c_attn.{w}", tuple(f"{q}.{w}" for q in qkv))]
        for hf_name, lm_name in (
            ("attn.c_proj", "attn.o"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.proj"),
        ):
            out += [_transposed(f"{h}{hf_name}.weight", f"{lm}{lm_name}.weight")]
            out += [Rule(f"{h}{hf_name}.bias", (f"{lm}{lm_name}.bias",))]
    return out + [Rule(f"{p}ln_f.{w}", (f"norm.{w}",)) for w in ("weight", "bias")]


def _neox_rules(hf: dict[str, Any], model: dict[str, Any]) -> list[Rule]:
    """`attention_bias: false` drops both attention biases; lm_lab's `o` keeps its bias (it
    follows `model.bias`, which the MLP needs), loaded as zeros: the same function."""
    p = "gpt_neox."
    out = [Rule(p + "embed_in.weight", ("embed.weight",))]
    biased = [("input_layernorm", "ln1"), ("post_attention_layernorm", "ln2")]
    biased += [("mlp.dense_h_to_4h", "mlp.fc"), ("mlp.dense_4h_to_h", "mlp.proj")]
    attention = ["weight", "bias"] if hf.get("attention_bias", True) else ["weight"]
    for i in range(model["n_layers"]):
        h, lm = f"{p}layers.{i}.", _layer(i)
        for w in ("weight", "bias"):
            out += [Rule(f"{h}{a}.{w}", (f"{lm}{b}.{w}",)) for a, b in biased]
        for w in attention:
            out += [Rule(f"{h}attention.dense.{w}", (f"{lm}attn.o.{w}",))]
            qkv = tuple(f"{lm}attn.{x}.{w}" for x in "qkv")
            out += [_interleaved(f"{h}attention.query_key_value.{w}", qkv, model["n_heads"])]
        if len(attention) == 1:
            out += [Rule(None, (f"{lm}attn.o.bias",))]
    return out + [Rule(f"{p}final_layer_norm.{w}", (f"norm.{w}",)) for w in ("weight", "bias")]


def _llama_rules(hf: dict[str, Any], model: dict[str, Any]) -> list[Rule]:
    p = "model."
    out = [Rule(p + "embed_tokens.weight", ("embed.weight",))]
    for i in range(model["n_layers"]):
        h, lm = f"{p}layers.{i}.", _layer(i)
        pairs = [("input_layernorm", "ln1"), ("post_attention_layernorm", "ln2")]
        pairs += [(f"self_attn.{x}_proj", f"attn.{x}") for x in "qkvo"]
        pairs += [
            ("mlp.gate_proj", "mlp.fc"),
            ("mlp.up_proj", "mlp.up"),
            ("mlp.down_proj", "mlp.proj"),
        ]
        out += [Rule(f"{h}{a}.weight", (f"{lm}{b}.weight",)) for a, b in pairs]
        if model["qkv_bias"]:
            out += [Rule(f"{h}self_attn.{x}_proj.bias", (f"{lm}attn.{x}.bias",)) for x in "qkv"]
    return out + [Rule(p + "norm.weight", ("norm.weight",))]
