"""lm_lab -> Hugging Face folder: config.json, model.safetensors and tokenizer files that
`transformers.AutoModelForCausalLM.from_pretrained` runs with the same logits.

A model exports as the family its options match: rope + RMSNorm + SwiGLU -> llama (qwen2 with
q/k/v biases), learned positions + LayerNorm + GELU -> gpt2, rope + LayerNorm + GELU -> gpt_neox.
Biases the family has and the model lacks (`bias: false`) are written as zeros. LoRA and IA3
are merged first; a LoRA run also gets a PEFT adapter (`adapter/`) over its unmerged base
(`base/`) when its targets are plain projections of the family.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lm_lab.hf.families import TARGET, rules
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

EXPORTABLE = (None, "full", "head", "partial", "bitfit", "lora", "ia3")  # strategy short names
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
}


def family_of(model: dict[str, Any]) -> str:
    """The family whose architecture computes what this model config computes, or a one-line
    error naming the option no family has."""

    def no(option: str) -> ConfigError:
        return ConfigError(f"{option} has no Hugging Face family lm_lab exports to")

    if model.get("_target_") != TARGET:
        raise no(f"model._target_={model.get('_target_')}")
    norm, mlp, positions = (
        model.get("norm", "layernorm"),
        model.get("mlp", "gelu"),
        model["positions"],
    )
    if model.get("d_ff") == 0:
        raise no("model.d_ff=0 (attention only)")
    if norm == "rmsnorm":
        if mlp != "swiglu" or positions != "rope":
            raise no(f"model.norm=rmsnorm with model.mlp={mlp}, model.positions={positions}")
        for key in ("bias", "parallel_residual"):
            if model.get(key):
                raise no(f"model.{key}=true with model.norm=rmsnorm")
        if model.get("rotary_fraction", 1.0) != 1.0:
            raise no(f"model.rotary_fraction={model['rotary_fraction']} with model.norm=rmsnorm")
        return "qwen2" if model.get("qkv_bias") else "llama"
    if mlp == "swiglu":
        raise no("model.mlp=swiglu with model.norm=layernorm")
    if model.get("n_kv_heads") not in (None, model["n_heads"]):
        raise no(f"model.n_kv_heads={model['n_kv_heads']} with model.norm=layernorm")
    if model.get("qkv_bias") not in (None, model.get("bias", True)):
        raise no(f"model.qkv_bias={model['qkv_bias']} different from model.bias")
    if positions == "learned" and not model.get("parallel_residual"):
        return "gpt2"
    if positions == "rope" and not model.get("rope_scaling"):
        return "gpt_neox"
    raise no(f"model.positions={positions}")


def hf_config(family: str, model: dict[str, Any], vocab: int, tokenizer: Any) -> dict[str, Any]:
    """config.json of `family` for an lm_lab model config."""
    d, heads = model["d_model"], model["n_heads"]
    d_ff = 4 * d if model.get("d_ff") is None else model["d_ff"]
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new"}.get(model.get("mlp", "gelu"), "silu")
    tie = model.get("tie_embeddings", True)
    common = {
        "model_type": family,
        "architectures": [ARCHITECTURES[family]],
        "vocab_size": vocab,
        "tie_word_embeddings": tie,
        "pad_token_id": tokenizer.pad_id,
        "eos_token_id": tokenizer.eos_id,
        "bos_token_id": tokenizer.bos_ids[0] if tokenizer.bos_ids else None,
        "torch_dtype": "float32",
    }
    eps = model.get("norm_eps", 1e-5)
    if family == "gpt2":
        return common | {
            "n_embd": d,
            "n_layer": model["n_layers"],
            "n_head": heads,
            "n_inner": d_ff,
            "n_positions": model["max_len"],
            "layer_norm_epsilon": eps,
            "activation_function": act,
        }
    rope = {"rope_theta": model.get("rope_theta", 10000.0), "rope_type": "default"}
    if model.get("rope_scaling"):
        scaling = dict(model["rope_scaling"])
        rope |= {"rope_type": scaling.pop("type")} | scaling
    shared = common | {
        "hidden_size": d,
        "num_hidden_layers": model["n_layers"],
        "num_attention_heads": heads,
        "intermediate_size": d_ff,
        "max_position_embeddings": model["max_len"],
        "rope_theta": rope["rope_theta"],
    }
    if family == "gpt_neox":
        fraction = model.get("rotary_fraction", 1.0)
        return shared | {
            "hidden_act": act,
            "layer_norm_eps": eps,
            "rotary_pct": fraction,
            "rotary_emb_base": rope["rope_theta"],
            "rope_parameters": rope | {"partial_rotary_factor": fraction},
            "use_parallel_residual": bool(model.get("parallel_residual")),
            "attention_bias": bool(model.get("bias", True)),
        }
    return shared | {
        "hidden_act": "silu",
        "rms_norm_eps": eps,
        "num_key_value_heads": model.get("n_kv_heads") or heads,
        "rope_parameters": rope,
        "rope_scaling": None if rope["rope_type"] == "default" else rope,
        "attention_bias": False,
        "mlp_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
    }


def plain_state(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's weights with every LoRA/IA3 update merged in (the module is changed)."""
    for owner in list(backbone.modules()):
        for name in list(getattr(owner, "parametrizations", {}).keys()):
            parametrize.remove_parametrizations(owner, name, leave_parametrized=True)
    return {k: v.detach() for k, v in backbone.state_dict().items()}


def hf_tensors(family: str, model: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The family's tensors from lm_lab backbone tensors; missing biases become zeros."""

    def get(name: str) -> Tensor:
        if name in state:
            return state[name]
        if name.endswith(".bias") and name.replace(".bias", ".weight") in state:
            return torch.zeros(state[name.replace(".bias", ".weight")].shape[0])
        raise ConfigError(f"export: the model has no {name}")

    hf = {"model_type": family}
    return {
        rule.hf: rule.join([get(lm) for lm in rule.lm]).contiguous()
        for rule in rules(hf, _with_defaults(model))
    }


def _with_defaults(model: dict[str, Any]) -> dict[str, Any]:
    return {"tie_embeddings": True, "qkv_bias": None} | model


def write_tokenizer(tokenizer: Any, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json for BPE and pretrained tokenizers."""
    state = json.loads(tokenizer.to_json())
    if "tokenizer" not in state:
        log.warning(f"export: a {state['kind']} tokenizer has no Hugging Face format; none written")
        return
    tokenizer.save(out / "tokenizer.json")
    (out / "lm_lab_tokenizer.json").unlink(missing_ok=True)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(state["tokenizer"])
    ids = {"pad": tokenizer.pad_id, "eos": tokenizer.eos_id}
    ids["bos"] = tokenizer.bos_ids[0] if tokenizer.bos_ids else state.get("bos_id")
    names = {f"{k}_token": tok.id_to_token(i) for k, i in ids.items() if i is not None}
    config = {k: v for k, v in names.items() if v is not None}
    config |= {
        "add_bos_token": bool(tokenizer.bos_ids),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def export(module: nn.Module, run_config: dict[str, Any], out: str | Path) -> Path:
    """Writes `out` (a Hugging Face folder) for a language model; returns it."""
    out = Path(out)
    if getattr(module, "task_name", None) != "generate":
        raise ConfigError("export: only language models (task=generate) export as causal LMs")
    strategy = (run_config.get("finetune") or {}).get("_target_", "")
    short = strategy.rsplit(".", 1)[0].rsplit(".", 1)[-1] if strategy else None
    if short not in EXPORTABLE:
        raise ConfigError(
            f"export: finetune={short} has no Hugging Face equivalent; "
            f"exportable: {', '.join(s for s in EXPORTABLE if s)}"
        )
    model = dict(run_config["model"]) | {"d_model": module.backbone.d_model}  # after sizing
    family = family_of(model)
    lora = lora_updates(module.backbone) if short == "lora" else {}
    if lora:
        base = {k: v.clone() for k, v in _originals(module.backbone).items()}
    tensors = hf_tensors(family, model, plain_state(module.backbone))
    vocab = module.backbone.embed.weight.shape[0]
    write_folder(out, hf_config(family, model, vocab, module.tokenizer), tensors, module.tokenizer)
    if lora:
        write_peft(out, family, model, base, lora, run_config["finetune"], vocab, module.tokenizer)
    log.info(f"exported a {family} model to {out}")
    return out


def write_folder(out: Path, config: dict, tensors: dict[str, Tensor], tokenizer: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(tokenizer, out)


def lora_updates(backbone: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """Backbone weight name -> (lora_A (r, in), lora_B (out, r)) of every LoRA update."""
    from lm_lab.finetune.lora import LoRAUpdate

    found = {}
    for owner_name, owner in backbone.named_modules():
        for weight, plist in getattr(owner, "parametrizations", {}).items():
            for reparam in plist:
                if isinstance(reparam, LoRAUpdate):
                    key = f"{owner_name.replace('.parametrizations', '')}.{weight}"
                    found[key] = (reparam.lora_A.detach().clone(), reparam.lora_B.detach().clone())
    return found


def _originals(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone state with each parametrized weight as stored (without its update)."""
    state = backbone.state_dict()
    plain = {k: v for k, v in state.items() if ".parametrizations." not in k}
    for key, value in state.items():
        if key.endswith(".original"):
            plain[key.replace(".parametrizations.", ".").removesuffix(".original")] = value
    return plain


def write_peft(
    out: Path,
    family: str,
    model: dict[str, Any],
    base: dict[str, Tensor],
    lora: dict[str, tuple[Tensor, Tensor]],
    finetune: dict[str, Any],
    vocab: int,
    tokenizer: Any,
) -> None:
    """`out/base` (the weights before LoRA) and `out/adapter` (PEFT LoRA) when every LoRA weight
    is one whole projection of the family; else a log line says why no adapter was written."""
    names = {
        rule.lm[0]: rule.hf
        for rule in rules({"model_type": family}, _with_defaults(model))
        if len(rule.lm) == 1 and rule.hf.endswith(".weight") and family != "gpt2"
    }
    unmapped = sorted(k for k in lora if k not in names)
    if unmapped:
        log.warning(
            f"export: no PEFT adapter, LoRA on {unmapped[0]} has no single module in {family}"
        )
        return
    tensors = hf_tensors(family, model, base)
    write_folder(out / "base", hf_config(family, model, vocab, tokenizer), tensors, tokenizer)
    adapter: dict[str, Tensor] = {}
    for key, (a, b) in lora.items():
        module = names[key].removesuffix(".weight")
        adapter[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        adapter[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    (out / "adapter").mkdir(exist_ok=True)
    save_file(
        adapter, str(out / "adapter" / "adapter_model.safetensors"), metadata={"format": "pt"}
    )
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str((out / "base").resolve()),
        "r": finetune.get("rank", 8),
        "lora_alpha": finetune.get("alpha", 16.0),
        "lora_dropout": finetune.get("dropout", 0.0),
        "use_rslora": finetune.get("rslora", False),
        "target_modules": sorted(
            {names[k].removesuffix(".weight").rsplit(".", 1)[-1] for k in lora}
        ),
        "bias": "none",
        "fan_in_fan_out": False,
    }
    (out / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=1))
