"""lm_lab -> Hugging Face folder: config.json, model.safetensors and tokenizer files that
`transformers.AutoModelForCausalLM.from_pretrained` runs with the same logits.

A model exports as the family its options match: rope + RMSNorm + SwiGLU -> llama (qwen2 with
q/k/v biases), learned positions + LayerNorm + GELU -> gpt2, rope + LayerNorm + GELU -> gpt_neox.
Biases the family has and the model lacks (`bias: false`) are written as zeros. LoRA and IA3
are merged first; a LoRA run also gets a PEFT adapter (`adapter/`) over its unmerged base
(`base/`) when its targets are plain projections of the family.
"""

import json
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lm_lab.hf.families import TARGET, rules
from lm_lab.tasks.metrics import LANGUAGE_MODELS
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
    if positions == "learned" and not model.get("parallel_residual"):
        return "gpt2"
    if positions == "rope" and not model.get("rope_scaling"):
        return "gpt_neox"
    raise no(f"model.positions={positions}")


def exported_model(backbone: nn.Module, model: dict[str, Any]) -> dict[str, Any]:
    """The run's model keys with every shape read from the built backbone, not the config: a
    sized run (`model.param_budget`) chose its own d_model and d_ff, and config.json must say
    what the tensors hold."""
    encoder, embed = backbone.encoder, backbone.embed.weight  # embed (V, D)
    attn, mlp = encoder.layers[0].attn, encoder.layers[0].mlp
    shapes = {
        "d_model": embed.shape[1],
        "n_layers": len(encoder.layers),
        "n_heads": attn.n_heads,
        "n_kv_heads": attn.n_kv_heads,
        "d_ff": 0 if mlp is None else mlp.fc.out_features,
        "tie_embeddings": getattr(backbone, "lm_head", None) is None,
    }
    if model["positions"] == "learned":
        shapes["max_len"] = encoder.pos.embed.weight.shape[0]  # (max_len, D)
    return {"qkv_bias": None} | model | shapes


def hf_config(family: str, model: dict[str, Any], vocab: int, tokenizer: Any) -> dict[str, Any]:
    """config.json of `family` for an lm_lab model config (shapes from `exported_model`)."""
    d, heads, d_ff = model["d_model"], model["n_heads"], model["d_ff"]
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new"}.get(model.get("mlp", "gelu"), "silu")
    eos_ids = tokenizer.eos_ids
    common = {
        "model_type": family,
        "architectures": [ARCHITECTURES[family]],
        "vocab_size": vocab,
        "tie_word_embeddings": model["tie_embeddings"],
        "pad_token_id": tokenizer.pad_id,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids or None,  # may be a list
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
            # NeoX has one switch for q/k/v and dense biases: on when either exists here
            "attention_bias": bool(model.get("bias", True) or model.get("qkv_bias")),
        }
    return shared | {
        "hidden_act": "silu",
        "rms_norm_eps": eps,
        "num_key_value_heads": model["n_kv_heads"],
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


def hf_tensors(
    config: dict[str, Any], model: dict[str, Any], state: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The family's tensors (for its config.json) from lm_lab backbone tensors; biases the
    family has and the model lacks become zeros."""

    def get(name: str) -> Tensor:
        if name in state:
            return state[name]
        if name.endswith(".bias") and name.replace(".bias", ".weight") in state:
            return torch.zeros(state[name.replace(".bias", ".weight")].shape[0])
        raise ConfigError(f"export: the model has no {name}")

    return {
        rule.hf: rule.join([get(lm) for lm in rule.lm]).contiguous()
        for rule in rules(config, model)
        if rule.hf is not None
    }


def write_tokenizer(tokenizer: Any, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json for BPE and pretrained tokenizers. A pretrained
    tokenizer's config is the one it was read from (model_max_length, cleanup, ...) with its
    chat template, so a fine-tuned model still chats; the special tokens are the ones in use."""
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
    config = state.get("settings", {}) | {k: v for k, v in names.items() if v is not None}
    config |= {
        "add_bos_token": bool(tokenizer.bos_ids),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def export(
    module: nn.Module, run_config: dict[str, Any], out: str | Path, force: bool = False
) -> Path:
    """Writes `out` (a Hugging Face folder) for a language model; returns it. A non-empty `out`
    is refused unless `force`, and then replaced whole (see `staged`)."""
    out = Path(out)
    if getattr(module, "task_name", None) not in LANGUAGE_MODELS:
        raise ConfigError("export: only language models (task=generate|sft) export as causal LMs")
    strategy = (run_config.get("finetune") or {}).get("_target_", "")
    short = strategy.rsplit(".", 1)[0].rsplit(".", 1)[-1] if strategy else None
    if short not in EXPORTABLE:
        raise ConfigError(
            f"export: finetune={short} has no Hugging Face equivalent; "
            f"exportable: {', '.join(s for s in EXPORTABLE if s)}"
        )
    family = family_of(dict(run_config["model"]))  # before any module part is looked at
    model = exported_model(module.backbone, dict(run_config["model"]))
    vocab = module.backbone.embed.weight.shape[0]
    config = hf_config(family, model, vocab, module.tokenizer)
    lora = lora_updates(module.backbone) if short == "lora" else {}
    base = {k: v.clone() for k, v in _originals(module.backbone).items()} if lora else {}
    tensors = hf_tensors(config, model, plain_state(module.backbone))
    with staged(out, force) as folder:
        write_folder(folder, config, tensors, module.tokenizer)
        if lora:
            peft = PeftParts(config, model, base, lora, run_config["finetune"])
            write_peft(folder, out, peft, module.tokenizer)
    log.info(f"exported a {family} model to {out}")
    return out


def check_target(out: Path, force: bool) -> None:
    """`out` must be a new path or an empty folder, or any folder with `force`; never a file."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"export: out={out} is a file; give the folder to write (a new path, or a folder "
            "with --force)"
        )
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ConfigError(
            f"export: out={out} is not empty ({shown}); choose a new folder, or pass --force "
            "to replace the whole folder with the export"
        )


@contextmanager
def staged(out: Path, force: bool) -> Iterator[Path]:
    """A new folder beside `out` to write into, renamed to `out` once complete: a failed export
    leaves `out` as it was, and a replaced folder keeps none of its old files (stale shards, an
    index that would point transformers at them)."""
    check_target(out, force)
    folder = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()  # mode 0o777 minus the umask, as any folder the user makes
        yield folder
        _replace(folder, out)
    except OSError as err:
        raise ConfigError(
            f"export: cannot write {out} ({err.strerror or err}); choose a writable folder"
        ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _replace(folder: Path, out: Path) -> None:
    """Renames `folder` to `out`; an existing `out` is moved aside first and deleted after."""
    if not out.exists():
        folder.rename(out)
        return
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    out.rename(old)
    folder.rename(out)
    shutil.rmtree(old, ignore_errors=True)


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


@dataclass
class PeftParts:
    """What a PEFT adapter folder is made of: the family's config.json and model keys, the
    weights before LoRA and each update's (lora_A, lora_B)."""

    config: dict[str, Any]
    model: dict[str, Any]
    base: dict[str, Tensor]
    lora: dict[str, tuple[Tensor, Tensor]]
    finetune: dict[str, Any]


def write_peft(folder: Path, out: Path, parts: PeftParts, tokenizer: Any) -> None:
    """`folder/base` (the weights before LoRA) and `folder/adapter` (PEFT LoRA, pointing at
    `out/base`, where `folder` ends up) when every LoRA weight is one whole projection of the
    family; else a log line says why no adapter was written."""
    family, finetune = parts.config["model_type"], parts.finetune
    names = {
        rule.lm[0]: rule.hf
        for rule in rules(parts.config, parts.model)
        if len(rule.lm) == 1 and rule.hf and rule.hf.endswith(".weight") and family != "gpt2"
    }
    unmapped = sorted(k for k in parts.lora if k not in names)
    if unmapped:
        log.warning(
            f"export: no PEFT adapter, LoRA on {unmapped[0]} has no single module in {family}"
        )
        return
    tensors = hf_tensors(parts.config, parts.model, parts.base)
    write_folder(folder / "base", parts.config, tensors, tokenizer)
    adapter: dict[str, Tensor] = {}
    for key, (a, b) in parts.lora.items():
        module = names[key].removesuffix(".weight")
        adapter[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        adapter[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    (folder / "adapter").mkdir(exist_ok=True)
    save_file(
        adapter, str(folder / "adapter" / "adapter_model.safetensors"), metadata={"format": "pt"}
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
            {names[k].removesuffix(".weight").rsplit(".", 1)[-1] for k in parts.lora}
        ),
        "bias": "none",
        "fan_in_fan_out": False,
    }
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=1))
