"""A GGUF file (llama.cpp's format) -> a Hugging Face model folder that the rest of lm_lab.hf
reads like any other: config.json, fp32 model.safetensors, tokenizer.json, tokenizer_config.json
(special tokens, chat template) and generation_config.json.

The conversion dequantizes every tensor once (numpy, the `gguf` package), undoes the Q/K row
permutation llama.cpp's converter applies to llama-architecture files, and rebuilds the
tokenizer from the file's metadata. It is cached under `$LM_LAB_CACHE/gguf/<content hash>/`,
published by a rename, so later runs load that folder memory-mapped and never convert again;
a changed file (another hash) converts anew. `transformers` is never needed here.
"""

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from torch import Tensor

from lm_lab.data.sources.pydoc_corpus import default_cache_dir
from lm_lab.hf.rope_freqs import ACCEPTED, llama3_scaling
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

CONVERTER_VERSION = 1  # part of the cache key: bump when the folder written changes
ROPE_FREQS = "rope_freqs.weight"  # Llama 3's per-frequency rope factors: read, not a weight
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
MISTRAL = "MistralForCausalLM"  # llama.cpp writes Mistral models as architecture llama
QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")
INSTALL = "pip install gguf (or make install)"
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (gguf.TokenType)
SHARD_BYTES = 2 << 30  # fp32 bytes per safetensors shard: the most held in memory at once

# GGUF tensor name (after `blk.<i>.`) -> Hugging Face name (after `model.layers.<i>.`)
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# Byte-level BPE pre-tokenizers by `tokenizer.ggml.pre`: llama.cpp's regexes for each name
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _split_after_contractions(numbers: str) -> str:
    """Llama 3's and Qwen2's regex (they differ only in how many digits make one piece)."""
    return (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
        + numbers
        + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )


PRE_SPLITS = {
    "default": [_GPT2_SPLIT],
    "gpt-2": [_GPT2_SPLIT],
    "smollm": [r"\p{N}", _GPT2_SPLIT],  # SmolLM/StarCoder: every digit alone, then GPT-2's
    "llama-bpe": [_split_after_contractions(r"\p{N}{1,3}")],
    "llama3": [_split_after_contractions(r"\p{N}{1,3}")],
    "qwen2": [_split_after_contractions(r"\p{N}")],
}


def is_gguf(source: Any) -> bool:
    return str(source).endswith(".gguf")


def cache_root() -> Path:
    return default_cache_dir() / "gguf"


def content_key(path: Path) -> str:
    """sha256 of the file's bytes (and the converter's version): the cache folder's name."""
    digest = hashlib.sha256(f"lm_lab-gguf-{CONVERTER_VERSION}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def converted(path: str | Path, key: str = "init_from") -> Path:
    """The Hugging Face folder of a GGUF file: from the cache, or converted now and cached."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such GGUF file")
    folder = cache_root() / content_key(path)
    if (folder / "config.json").is_file():
        log.info(f"{key}={path}: converted folder cached at {folder}")
        return folder
    started = time.perf_counter()
    publish(GGUFFile(path, key), folder)
    seconds = time.perf_counter() - started
    log.info(f"{key}={path}: converted to a Hugging Face folder at {folder} in {seconds:.1f} s")
    return folder


def publish(f: "GGUFFile", folder: Path) -> None:
    """Writes the folder under a temporary name, then renames it into place: a reader never
    sees half a folder, and a racing process that published first keeps its copy."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_folder(f, tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class GGUFFile:
    """A GGUF file's metadata and tensors, checked: one-line errors for an unreadable file,
    an architecture or a quantization lm_lab does not convert."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        try:
            import gguf  # noqa: F401  (reader and dequantizer; not needed for other sources)
        except ImportError:
            raise ConfigError(
                f"{key}={path}: reading GGUF needs the gguf package: {INSTALL}"
            ) from None
        self.reader = self._read()
        self.arch = str(self.field("general.architecture"))
        if self.arch not in ARCHITECTURES:
            raise ConfigError(
                f"{key}={path}: GGUF architecture {self.arch!r} is not supported; lm_lab "
                f"converts {', '.join(ARCHITECTURES)} (Mistral files say llama)"
            )
        tensors = {t.name: t for t in self.reader.tensors}
        for tensor in tensors.values():
            if tensor.tensor_type.name not in QUANTS:
                raise ConfigError(
                    f"{key}={path}: tensor {tensor.name} is {tensor.tensor_type.name}; lm_lab "
                    f"converts {', '.join(QUANTS)} (re-quantize the model to one of them)"
                )
        self.rope_freqs = tensors.pop(ROPE_FREQS, None)  # config, not state: see rope_scaling
        self.tensors = tensors  # the weights

    def _read(self) -> Any:
        from gguf import GGUFReader

        try:
            reader = GGUFReader(self.path)
            for tensor in reader.tensors:  # a cut file ends inside the data: sizes disagree
                if tensor.data.nbytes != tensor.n_bytes:
                    raise ValueError(f"tensor {tensor.name} ends past the end of the file")
            return reader
        except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"{self.key}={self.path}: not a readable GGUF file (truncated or corrupt: {err})"
            ) from None

    def field(self, name: str, default: Any = ...) -> Any:
        """A metadata value (`{arch}.` names: use arch_field); `default` when absent."""
        if name in self.reader.fields:
            return self.reader.fields[name].contents()
        if default is ...:
            raise ConfigError(f"{self.key}={self.path}: GGUF metadata {name} is missing")
        return default

    def arch_field(self, name: str, default: Any = ...) -> Any:
        return self.field(f"{self.arch}.{name}", default)

    def array(self, tensor: Any) -> np.ndarray:
        """The fp32 values of a tensor, (out, in) for matrices as Hugging Face stores them."""
        from gguf.quants import dequantize

        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims innermost first
        return dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)


def hf_config(f: GGUFFile) -> dict[str, Any]:
    """config.json of the file's model; odd head sizes and rope scalings other than Llama 3's
    are refused."""
    heads, width = int(f.arch_field("attention.head_count")), int(f.arch_field("embedding_length"))
    head_dim = width // heads
    for name in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if int(f.arch_field(name, head_dim)) != head_dim:
            raise ConfigError(
                f"{f.key}={f.path}: {f.arch}.{name}={f.arch_field(name)} is not "
                f"embedding_length / head_count = {head_dim}; lm_lab cannot run it"
            )
    if "token_embd.weight" not in f.tensors:
        raise ConfigError(f"{f.key}={f.path}: GGUF tensor token_embd.weight is missing")
    vocab = int(f.tensors["token_embd.weight"].shape[-1])  # embedding rows (GGUF: (D, V))
    config = {
        "architectures": [_architecture(f)],
        "model_type": "mistral" if _architecture(f) == MISTRAL else f.arch,
        "hidden_size": width,
        "intermediate_size": int(f.arch_field("feed_forward_length")),
        "num_hidden_layers": int(f.arch_field("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(f.arch_field("attention.head_count_kv", heads)),
        "max_position_embeddings": int(f.arch_field("context_length")),
        "rms_norm_eps": float(f.arch_field("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(f.arch_field("rope.freq_base", 10000.0)),
        "vocab_size": int(vocab),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "torch_dtype": "float32",
        "lm_lab_gguf": {  # provenance: what was dequantized
            "file": f.path.name,
            "tensor_types": dict(Counter(t.tensor_type.name for t in f.tensors.values())),
        },
    }
    if config["model_type"] != "llama":
        config |= {"sliding_window": None, "use_sliding_window": False}
    if scaling := rope_scaling(f, head_dim, config["rope_theta"]):
        config["rope_scaling"] = scaling  # absent otherwise: unscaled folders are as before
    return config | special_ids(f)


def rope_scaling(f: GGUFFile, head_dim: int, base: float) -> dict[str, Any] | None:
    """Llama 3.1+'s rope scaling, which llama.cpp stores only as rope_freqs.weight (see
    rope_freqs.py); None for unscaled rope. Another `rope.scaling.type` is refused."""
    kind = f.arch_field("rope.scaling.type", "none")
    if kind != "none":
        raise ConfigError(
            f"{f.key}={f.path}: {f.arch}.rope.scaling.type={kind!r} is not supported; {ACCEPTED}"
        )
    if f.rope_freqs is None:
        return None
    try:
        return llama3_scaling(
            f.array(f.rope_freqs),
            head_dim,
            base,
            factor=f.arch_field("rope.scaling.factor", None),
            context=f.arch_field("rope.scaling.original_context_length", None),
        )
    except ValueError as err:
        raise ConfigError(f"{f.key}={f.path}: GGUF tensor {ROPE_FREQS} {err}") from None


def _architecture(f: GGUFFile) -> str:
    """transformers' reading: a llama file whose general.name says mistral is Mistral."""
    if f.arch == "llama" and "mistral" in str(f.field("general.name", "")).lower():
        return MISTRAL
    return ARCHITECTURES[f.arch]


def special_ids(f: GGUFFile) -> dict[str, int]:
    names = {"bos": "bos", "eos": "eos", "pad": "padding", "unk": "unknown"}
    ids = {k: f.field(f"tokenizer.ggml.{v}_token_id", None) for k, v in names.items()}
    return {f"{k}_token_id": int(v) for k, v in ids.items() if v is not None}


def hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`, and so on."""
    stem, suffix = gguf_name.rsplit(".", 1)
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        if part in LAYER_TENSORS:
            return f"model.layers.{layer}.{LAYER_TENSORS[part]}.{suffix}"
    elif stem in TOP_TENSORS:
        return f"{TOP_TENSORS[stem]}.{suffix}"
    raise KeyError(gguf_name)


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of q/k rows. Hugging Face's rope pairs dim j with dim
    j + Dh/2 of each head; GGML's pairs neighbours, so the converter moved each pair's rows side
    by side: (H, 2, Dh/2, D) -> (H, Dh/2, 2, D). This is the inverse move."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def shards(f: GGUFFile) -> list[dict[str, str]]:
    """GGUF name -> Hugging Face name, cut into groups of at most SHARD_BYTES of fp32 (one
    group in memory at a time); a name with no place in the family fails before any work."""
    groups: list[dict[str, str]] = [{}]
    size = 0
    for name, tensor in f.tensors.items():
        try:
            target = hf_name(name)
        except KeyError:
            raise ConfigError(
                f"{f.key}={f.path}: GGUF tensor {name} has no place in a {f.arch} model"
            ) from None
        if groups[-1] and size + 4 * tensor.n_elements > SHARD_BYTES:
            groups, size = [*groups, {}], 0
        groups[-1][name] = target
        size += 4 * tensor.n_elements
    return groups


def dequantized(f: GGUFFile, names: dict[str, str], config: dict[str, Any]) -> dict[str, Tensor]:
    """The tensors `names` maps, in fp32 under their Hugging Face names, q/k un-permuted."""
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    out: dict[str, Tensor] = {}
    for name, target in names.items():
        values = f.array(f.tensors[name])
        part = name.split(".")[-2]
        if f.arch == "llama" and part in heads:  # llama.cpp permutes only llama's q/k
            values = unpermute(values, heads[part])
        out[target] = torch.from_numpy(np.ascontiguousarray(values))
    return out


def write_weights(f: GGUFFile, config: dict[str, Any], out: Path) -> None:
    """model.safetensors, or shards listed in model.safetensors.index.json past SHARD_BYTES."""
    groups, meta = shards(f), {"format": "pt"}
    if len(groups) == 1:
        save_file(dequantized(f, groups[0], config), str(out / "model.safetensors"), meta)
        return
    weight_map = {}
    for i, names in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(dequantized(f, names, config), str(out / file), meta)
        weight_map |= dict.fromkeys(names.values(), file)
    total = sum(4 * t.n_elements for t in f.tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_json(out / "model.safetensors.index.json", index)


def hf_tokenizer(f: GGUFFile) -> Tokenizer:
    """tokenizer.json of the file's tokenizer: byte-level BPE (`tokenizer.ggml.model` gpt2) or
    sentencepiece BPE (llama), control tokens special, user-defined ones matched whole."""
    kind, tokens = f.field("tokenizer.ggml.model"), f.field("tokenizer.ggml.tokens")
    builders = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}
    if kind not in builders:
        raise ConfigError(
            f"{f.key}={f.path}: tokenizer.ggml.model={kind!r} is not supported; lm_lab builds "
            "byte-level BPE (gpt2) and sentencepiece BPE (llama) tokenizers"
        )
    tok = builders[kind](f, tokens)
    types = list(f.field("tokenizer.ggml.token_type", []))
    tok.add_special_tokens(_added(tokens, types, CONTROL, special=True))
    tok.add_tokens(_added(tokens, types, USER_DEFINED, special=False))
    return tok


def _byte_level_bpe(f: GGUFFile, tokens: list[str]) -> Tokenizer:
    """The file's merges, split first by llama.cpp's regex for `tokenizer.ggml.pre`."""
    pre = str(f.field("tokenizer.ggml.pre", "default"))
    if pre not in PRE_SPLITS:
        raise ConfigError(
            f"{f.key}={f.path}: tokenizer.ggml.pre={pre!r} is not supported; lm_lab knows "
            f"{', '.join(PRE_SPLITS)}"
        )
    merges = [tuple(m.split(" ", 1)) for m in f.field("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_SPLITS[pre]]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([*splits, byte_level])
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(f: GGUFFile, tokens: list[str]) -> Tokenizer:
    """Llama 2 / Mistral style: spaces as `▁`, a `▁` before the text when
    `tokenizer.ggml.add_space_prefix` (default true), bytes `<0xNN>` for what the vocabulary
    lacks, and merges ranked by the score of the piece they make (the file has none)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    scores = dict(zip(tokens, f.field("tokenizer.ggml.scores"), strict=True))
    merges = _merges_by_score(vocab, scores)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True))
    prefix = bool(f.field("tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


def _merges_by_score(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces of the vocabulary, best piece first (sentencepiece
    merges the pair whose result scores highest); ties: longer left part, longer right part,
    then the piece's id, as transformers orders them."""
    ranked = [
        (-scores[piece], -i, -(len(piece) - i), vocab[piece], piece, i)
        for piece in vocab
        for i in range(1, len(piece))
        if piece[:i] in vocab and piece[i:] in vocab
    ]
    return [(piece[:i], piece[i:]) for *_, piece, i in sorted(ranked)]


def _added(tokens: list[str], types: list[int], kind: int, special: bool) -> list[AddedToken]:
    """Tokens of one token_type, matched whole in any text (never cut into pieces)."""
    return [
        AddedToken(token, normalized=False, special=special)
        for token, t in zip(tokens, types, strict=False)
        if t == kind
    ]


def tokenizer_config(f: GGUFFile, config: dict[str, Any]) -> dict[str, Any]:
    """Special tokens, chat template, BOS: what the file says; unsaid, llama.cpp puts BOS
    before a sentencepiece vocabulary's texts."""
    tokens, spm = f.field("tokenizer.ggml.tokens"), f.field("tokenizer.ggml.model") == "llama"
    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config["max_position_embeddings"],
        "add_bos_token": bool(f.field("tokenizer.ggml.add_bos_token", spm)),
        "chat_template": f.field("tokenizer.chat_template", None),
    }
    for name in ("bos", "eos", "pad", "unk"):
        if f"{name}_token_id" in config:
            out[f"{name}_token"] = tokens[config[f"{name}_token_id"]]
    return {k: v for k, v in out.items() if v is not None}


def write_folder(f: GGUFFile, out: Path) -> None:
    """The Hugging Face folder of `f` in `out` (the weights written last but one)."""
    config = hf_config(f)
    tokenizer = hf_tokenizer(f)
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config(f, config))
    generation = {k: v for k, v in config.items() if k in ("bos_token_id", "eos_token_id")}
    _write_json(out / "generation_config.json", generation | {"do_sample": False})
    write_weights(f, config, out)
    _write_json(out / "config.json", config)  # last: a folder with config.json is complete


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
