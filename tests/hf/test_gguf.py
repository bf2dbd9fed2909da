"""GGUF -> Hugging Face folder (lm_lab.hf.gguf) on tiny files this test writes with the `gguf`
package: random llama / mistral / qwen2 weights of every supported quantization, a byte-level
BPE vocabulary. The reference is transformers' own GGUF loading of the same file."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_lab.hf import gguf as convert
from lm_lab.hf.folder import is_hf_source
from lm_lab.hf.load import load_language_model
from lm_lab.utils.errors import ConfigError
from tests.hf.test_rope_freqs import llama3_rope_freqs

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")  # the dev extra

ROOT = Path(__file__).resolve().parents[2]
Q = gguf.GGMLQuantizationType
TEXTS = [
    "the movie was great and the actors were wonderful",
    "a terrible film, boring from start to end 1999",
    "I loved the music but the story was weak",
    "one of the best films of the year 2024",
] * 5
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
HEADS, KV_HEADS, WIDTH, FF = 4, 2, 64, 256  # FF = one 256-value block: K-quants fit ffn_down
# Hugging Face name (after model.layers.<i>.) -> GGUF name (after blk.<i>.): llama.cpp's table
LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
QUANT_SETS = {  # matrices of layer 0 / layer 1 (embedding and norms stay as named)
    "f32_q8_0": (Q.F32, Q.Q8_0),
    "f16_bf16": (Q.F16, Q.BF16),
    "q4_0_q4_1": (Q.Q4_0, Q.Q4_1),
    "q4_k_q6_k": (Q.Q4_K, Q.Q6_K),  # on ffn_down (the only 256-wide rows); others Q8_0
}
K_BLOCKS = {Q.Q4_K: (144, [0, 2]), Q.Q6_K: (210, [208])}  # bytes per 256 values, f16 scale at


def byte_bpe() -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary (specials first) and its merges, trained on TEXTS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    return tokens, [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]


def sentencepiece_vocab() -> tuple[list[str], list[float], list[int]]:
    """A Llama-2-style vocabulary as llama.cpp stores one: <unk>, <s>, </s>, 256 byte tokens,
    then pieces; each piece scored by when BPE learnt it (no merges in the file)."""
    from tokenizers import SentencePieceBPETokenizer

    tok = SentencePieceBPETokenizer()
    tok.train_from_iterator(TEXTS, vocab_size=200, show_progress=False, special_tokens=["<unk>"])
    model = json.loads(tok._tokenizer.to_str())["model"]
    learnt = ["".join(m) if isinstance(m, list) else m.replace(" ", "") for m in model["merges"]]
    chars = [t for t in sorted(model["vocab"], key=model["vocab"].get) if len(t) == 1]
    pieces = chars + [p for p in dict.fromkeys(learnt) if p not in chars]
    scores = [-1000.0 - i for i in range(len(chars))] + [-float(i) for i in range(len(pieces))]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    types = [2, 3, 3, *[6] * 256, *[1] * len(pieces)]
    return tokens, [0.0] * 259 + scores[: len(pieces)], types


def add_tokenizer(w: "gguf.GGUFWriter", kind: str, pre: str) -> int:
    """tokenizer.ggml.*: byte-level BPE (gpt2 or, to be refused, another model name) or a
    sentencepiece vocabulary (llama); returns the vocabulary size."""
    w.add_tokenizer_model(kind)
    if kind == "llama":
        tokens, scores, types = sentencepiece_vocab()
        w.add_token_scores(scores)
    else:
        tokens, merges = byte_bpe()
        types = [3 if t in SPECIALS else 1 for t in tokens]
        w.add_tokenizer_pre(pre)
        w.add_token_merges(merges)
    w.add_token_list(tokens)
    w.add_token_types(types)
    return len(tokens)


def hf_model(family: str, vocab: int) -> "transformers.PreTrainedModel":
    kind = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config"}[family]
    config = getattr(transformers, kind)(
        hidden_size=WIDTH,
        intermediate_size=FF,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=128,
        vocab_size=vocab,
        rms_norm_eps=1e-5,
        rope_theta=5000.0,
        tie_word_embeddings=family == "qwen2",
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms and biases away from their init, so mapping them matters
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute` of q/k rows (what the converter must undo)."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_name(hf: str) -> str:
    stem, suffix = hf.rsplit(".", 1)
    if stem.startswith("model.layers."):
        _, _, layer, part = stem.split(".", 3)
        return f"blk.{layer}.{LAYER[part]}.{suffix}"
    return f"{TOP[stem]}.{suffix}"


def k_quant_bytes(rows: int, cols: int, qtype: "gguf.GGMLQuantizationType") -> np.ndarray:
    """Random blocks of a K-quant (gguf has no numpy quantizer for them) with small f16 scales."""
    size, scale_at = K_BLOCKS[qtype]
    rng = np.random.default_rng(int(qtype))
    blocks = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    if qtype == Q.Q6_K:
        blocks[:, 192:208] = rng.integers(0, 16, (len(blocks), 16), dtype=np.uint8)  # int8 scales
    for at in scale_at:
        blocks[:, at : at + 2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


def stored(name: str, w: np.ndarray, quants: tuple) -> tuple[np.ndarray, "Q"]:
    """The bytes (or floats) a tensor is written as, and its type."""
    if w.ndim == 1 or name.startswith(("token_embd", "output.")):
        return w, Q.F32
    qtype = quants[int(name.split(".")[1])]
    if qtype in K_BLOCKS:
        if not name.endswith("ffn_down.weight"):
            return gguf.quants.quantize(w, Q.Q8_0), Q.Q8_0
        return k_quant_bytes(*w.shape, qtype), qtype
    return (w, Q.F32) if qtype == Q.F32 else (gguf.quants.quantize(w, qtype), qtype)


def write_gguf(
    path: Path,
    family: str = "llama",
    quants: tuple = (Q.F32, Q.Q8_0),
    extra: dict[str, np.ndarray] | None = None,
    tokenizer: str = "gpt2",
    pre: str = "smollm",
    rope_dims: int = WIDTH // HEADS,
    skip: tuple[str, ...] = (),
    meta: dict[str, object] | None = None,
) -> Path:
    """A GGUF file as llama.cpp's converter writes one: metadata, tokenizer, permuted q/k;
    `extra` tensors, `meta` (GGUFWriter method -> value) and the other keywords make scaled
    rope or bad files."""
    arch = "qwen2" if family == "qwen2" else "llama"
    w = gguf.GGUFWriter(str(path), arch)
    vocab = add_tokenizer(w, tokenizer, pre)
    model = hf_model(family, vocab)
    w.add_name(f"tiny-{family}")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(WIDTH)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(5000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(rope_dims)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if tokenizer != "llama":  # sentencepiece files often leave it unsaid: BOS by default
        w.add_add_bos_token(False)
    w.add_chat_template(CHAT)
    for method, value in (meta or {}).items():
        getattr(w, method)(value)
    for hf, tensor in model.state_dict().items():
        values = tensor.numpy()
        if arch == "llama" and ".q_proj." in hf:
            values = permute(values, HEADS)
        if arch == "llama" and ".k_proj." in hf:
            values = permute(values, KV_HEADS)
        name = gguf_name(hf)
        if name in skip:
            continue
        data, qtype = stored(name, values, quants)
        w.add_tensor(name, data, raw_dtype=qtype)
    for name, data in (extra or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LM_LAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def theirs(path: Path) -> "transformers.PreTrainedModel":
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("quants", list(QUANT_SETS))
def test_converted_logits_equal_transformers_gguf_loading(tmp_path, family, quants):
    path = write_gguf(tmp_path / f"{family}.gguf", family, QUANT_SETS[quants])
    ours, _ = load_language_model(path)
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (2, 20))  # (B, T)
    expected = theirs(path)(input_ids=ids).logits  # (B, T, V)
    torch.testing.assert_close(ours(ids), expected, atol=1e-4, rtol=1e-4)


def test_a_large_model_is_written_as_shards_with_an_index(tmp_path, monkeypatch):
    """Past SHARD_BYTES of fp32 the weights go to several files, one in memory at a time."""
    monkeypatch.setattr(convert, "SHARD_BYTES", 64 * 1024)
    path = write_gguf(tmp_path / "m.gguf")
    folder = convert.converted(path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == {p.name for p in shards}
    ours, _ = load_language_model(path)
    ids = torch.randint(3, 300, (1, 12))
    torch.testing.assert_close(ours(ids), theirs(path)(input_ids=ids).logits, atol=1e-4, rtol=0)


def test_without_the_unpermute_the_logits_differ(tmp_path, monkeypatch):
    """The comparison above can fail: drop the q/k un-permutation and it does."""
    path = write_gguf(tmp_path / "llama.gguf")
    monkeypatch.setattr(convert, "unpermute", lambda w, n_heads: w)
    ours, _ = load_language_model(path)
    ids = torch.randint(3, 300, (1, 12))
    assert not torch.allclose(ours(ids), theirs(path)(input_ids=ids).logits, atol=1e-3)


# head 16, base 5000: wavelengths 6.3, 18.2, 52.8, 153, ... against the band [64 / 4, 64]: one
# frequency unscaled, two blended, five slowed by 8
LLAMA3 = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def test_llama3_rope_freqs_become_rope_scaling_and_logits_equal_transformers(tmp_path):
    """transformers' GGUF loader skips rope_freqs.weight (its model runs unscaled rope), so the
    reference is its LlamaForCausalLM with the same weights and the llama3 rope_scaling."""
    factors = llama3_rope_freqs(**LLAMA3)
    # by hand (float64): s = (64 / wavelength - 1) / 3, factor 1 / ((1 - s) / 8 + s)
    np.testing.assert_allclose(factors, [1, 1.1657158, 5.3580818, *[8] * 5], rtol=1e-6)
    path = write_gguf(tmp_path / "llama31.gguf", extra={"rope_freqs.weight": factors})
    folder = convert.converted(path)
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_scaling"] == {"rope_type": "llama3", **LLAMA3}
    assert config["lm_lab_gguf"]["tensor_types"] == {"F32": 14, "Q8_0": 7}  # weights only
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", framework="pt") as f:
        assert not [k for k in f.keys() if "rope" in k]  # noqa: SIM118 (no __iter__)
    unscaled = theirs(path)
    assert unscaled.config.rope_parameters["rope_type"] == "default"
    scaled = copy.deepcopy(unscaled.config)
    scaled.rope_parameters = {"rope_theta": 5000.0, "rope_type": "llama3", **LLAMA3}
    reference = transformers.LlamaForCausalLM(scaled).eval()
    reference.load_state_dict(unscaled.state_dict())
    ours, _ = load_language_model(path)
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (2, 64))  # (B, T): positions past the band's shortest wavelength
    logits = ours(ids)  # (B, T, V)
    torch.testing.assert_close(logits, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits, theirs(path)(input_ids=ids).logits, atol=1e-3)


def test_the_files_rope_scaling_metadata_is_used_and_checked(tmp_path):
    """low 2, high 8, context 128 draw LLAMA3's factors (same ratios): only the file's
    original_context_length tells them apart, and a rope.scaling.factor the factors deny fails."""
    wider = {**LLAMA3, "low_freq_factor": 2.0, "high_freq_factor": 8.0}
    wider["original_max_position_embeddings"] = 128
    factors = llama3_rope_freqs(**wider)
    np.testing.assert_array_equal(factors, llama3_rope_freqs(**LLAMA3))
    meta = {"add_rope_scaling_orig_ctx_len": 128, "add_rope_scaling_factor": 8.0}
    path = write_gguf(tmp_path / "ctx.gguf", extra={"rope_freqs.weight": factors}, meta=meta)
    config = json.loads((convert.converted(path) / "config.json").read_text())
    assert config["rope_scaling"] == {"rope_type": "llama3", **wider}
    meta["add_rope_scaling_factor"] = 12.0  # the largest factor is 8
    path = write_gguf(tmp_path / "f4.gguf", extra={"rope_freqs.weight": factors}, meta=meta)
    with pytest.raises(ConfigError, match="no llama3 parameters give"):
        convert.converted(path)


def test_rope_freqs_of_ones_are_no_scaling(tmp_path):
    """Factors all 1 divide no frequency: the file opens as unscaled rope (no rope_scaling)."""
    path = write_gguf(tmp_path / "ones.gguf", extra={"rope_freqs.weight": ONES})
    assert "rope_scaling" not in json.loads((convert.converted(path) / "config.json").read_text())
    ours, _ = load_language_model(path)
    ids = torch.randint(3, 300, (1, 40))
    torch.testing.assert_close(ours(ids), theirs(path)(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_the_folder_has_config_tokenizer_chat_template_and_generation_config(tmp_path):
    folder = convert.converted(write_gguf(tmp_path / "m.gguf", "llama", (Q.F32, Q.Q4_1)))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == KV_HEADS
    assert "rope_scaling" not in config  # as converter version 1 wrote it: the cache key holds
    assert config["tie_word_embeddings"] is False  # output.weight is in the file
    # F32: embedding, output, final norm, 4 layer norms, layer 0's 7 matrices; Q4_1: layer 1's 7
    assert config["lm_lab_gguf"]["tensor_types"] == {"F32": 14, "Q4_1": 7}
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == CHAT
    assert (tok_config["bos_token"], tok_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (no __iter__)
    assert dtypes == {"F32"}


STRINGS = [
    "the movie was great",
    "  two spaces\n\nand newlines\tand a tab",
    "<|im_start|>user\nhello<|im_end|>",
    "naïve café, don't stop!",
    "emoji 🙂 and 東京",
]


@pytest.mark.parametrize("pre", ["smollm", "gpt-2", "llama-bpe", "qwen2"])
def test_tokenizer_ids_equal_transformers_gguf_tokenizer(tmp_path, pre):
    """Each tokenizer.ggml.pre's split regex; digit runs only where transformers splits them
    as llama.cpp does (for smollm it keeps runs whole: see the next test)."""
    path = write_gguf(tmp_path / "m.gguf", pre=pre)
    ours, _ = load_language_model(path)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in STRINGS + ([] if pre == "smollm" else ["in 1999, 2024 people: 12345!"]):
        assert ours.tokenizer.encode(text) == reference(text, add_special_tokens=False).input_ids
        assert ours.tokenizer.decode(ours.tokenizer.encode(text)) == text.replace(
            "<|im_start|>", ""
        ).replace("<|im_end|>", "")


SPM_STRINGS = ["the movie was great", "Hello World", "two  spaces\nnewline", "東京 🙂 ok"]


def test_sentencepiece_tokenizer_ids_equal_transformers_gguf_tokenizer(tmp_path):
    """tokenizer.ggml.model=llama: merges rebuilt from the scores, bytes for unknown text."""
    path = write_gguf(tmp_path / "spm.gguf", tokenizer="llama")
    ours, _ = load_language_model(path)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert ours.tokenizer.bos_ids == [1]  # unsaid add_bos_token: BOS, as llama.cpp does
    for text in SPM_STRINGS:
        ids = ours.tokenizer.encode(text)
        assert ids == reference(text, add_special_tokens=False).input_ids
        assert ours.tokenizer.decode(ids) == text
    assert len(ours.tokenizer.encode("the")) == 1  # a learnt piece, not its letters


def test_smollm_pre_tokenizer_splits_every_digit(tmp_path):
    """tokenizer.ggml.pre=smollm is llama.cpp's \\p{N} split before GPT-2's regex (transformers'
    GGUF tokenizer keeps digit runs together: the one place the two differ)."""
    ours, _ = load_language_model(write_gguf(tmp_path / "m.gguf"))
    pieces = [ours.tokenizer.decode([i]) for i in ours.tokenizer.encode("year 2024")]
    assert pieces[-4:] == ["2", "0", "2", "4"]


def test_second_load_uses_the_cache_and_a_changed_file_converts_again(tmp_path, monkeypatch):
    path = write_gguf(tmp_path / "m.gguf")
    first = convert.converted(path)
    calls, real = [], convert.write_folder
    monkeypatch.setattr(convert, "write_folder", lambda f, out: calls.append(out) or real(f, out))
    assert convert.converted(path) == first and calls == []
    assert is_hf_source(path) and is_hf_source("missing.gguf")
    with open(path, "ab") as f:
        f.write(b"\0" * 32)  # padding after the data: same model, other content
    second = convert.converted(path)
    assert len(calls) == 1 and second != first and (second / "config.json").is_file()
    assert not list(first.parent.glob(".*"))  # the temp folder was renamed into place


def write_metadata_only(path: Path, arch: str) -> Path:
    """An architecture line and one tensor: no model metadata at all."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_truncated(path: Path) -> Path:
    data = write_gguf(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


ONES = np.ones(8, np.float32)
RANDOM_FACTORS = np.random.default_rng(0).uniform(1, 8, 8).astype(np.float32)
STEP_FACTORS = np.array([1, 1, 8, 8, 8, 8, 8, 8], np.float32)  # no blended band: not fixed
BAD = {  # case -> (writes the file, the one line's text)
    "architecture": (
        lambda p: write_metadata_only(p, "gpt2"),
        "GGUF architecture 'gpt2' is not supported; lm_lab converts llama, qwen2",
    ),
    "quantization": (
        lambda p: write_gguf(p, quants=(Q.F32, Q.Q5_0)),
        "tensor blk.1.attn_q.weight is Q5_0; lm_lab converts F32, F16, BF16, Q8_0, Q4_0",
    ),
    "truncated": (write_truncated, "not a readable GGUF file (truncated or corrupt"),
    "metadata": (
        lambda p: write_metadata_only(p, "llama"),
        "GGUF metadata llama.attention.head_count is missing",
    ),
    "tokenizer": (
        lambda p: write_gguf(p, tokenizer="bert"),
        "tokenizer.ggml.model='bert' is not supported; lm_lab builds byte-level BPE (gpt2)",
    ),
    "pre-tokenizer": (
        lambda p: write_gguf(p, pre="falcon"),
        "tokenizer.ggml.pre='falcon' is not supported; lm_lab knows default, gpt-2, smollm",
    ),
    "head size": (
        lambda p: write_gguf(p, rope_dims=8),
        "llama.rope.dimension_count=8 is not embedding_length / head_count = 16",
    ),
    "rope factors": (
        lambda p: write_gguf(p, extra={"rope_freqs.weight": RANDOM_FACTORS}),
        "GGUF tensor rope_freqs.weight holds factors 1.116 to 7.389 that no llama3 parameters "
        "give to 1e-06 relative: not Llama 3's rope scaling; lm_lab runs unscaled rope and "
        "Llama 3's rope_freqs",
    ),
    "rope band": (
        lambda p: write_gguf(p, extra={"rope_freqs.weight": STEP_FACTORS}),
        "rope_freqs.weight has 0 factors between 1 and 8 (Llama 3's blended band); recovering "
        "its rope scaling needs two",
    ),
    "rope length": (
        lambda p: write_gguf(p, extra={"rope_freqs.weight": ONES[:4]}),
        "rope_freqs.weight holds 4 factors, not head_dim / 2 = 8",
    ),
    "yarn": (
        lambda p: write_gguf(p, meta={"add_rope_scaling_type": gguf.RopeScalingType.YARN}),
        "llama.rope.scaling.type='yarn' is not supported; lm_lab runs unscaled rope and Llama 3's",
    ),
    "linear": (
        lambda p: write_gguf(
            p,
            extra={"rope_freqs.weight": llama3_rope_freqs(**LLAMA3)},
            meta={"add_rope_scaling_type": gguf.RopeScalingType.LINEAR},
        ),
        "llama.rope.scaling.type='linear' is not supported",
    ),
    "no embedding": (
        lambda p: write_gguf(p, skip=("token_embd.weight",)),
        "GGUF tensor token_embd.weight is missing",
    ),
    "unknown tensor": (
        lambda p: write_gguf(p, extra={"blk.0.ffn_gate_exps.weight": ONES}),
        "GGUF tensor blk.0.ffn_gate_exps.weight has no place in a llama model",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_gguf_fails_in_one_line(tmp_path, case):
    write, message = BAD[case]
    path = write(tmp_path / "bad.gguf")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_language_model(path)
    assert not list((tmp_path / "cache").glob("gguf/*"))  # nothing was published


def test_a_missing_file_or_gguf_package_fails_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"init_from=.*nope\.gguf: no such GGUF file"):
        convert.converted(tmp_path / "nope.gguf")
    path = write_metadata_only(tmp_path / "m.gguf", "llama")
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now fails
    with pytest.raises(ConfigError, match=r"needs the gguf package: pip install gguf"):
        convert.converted(path)


@pytest.mark.parametrize("case", ["truncated", "rope factors"])
def test_generate_py_with_a_bad_gguf_exits_2_with_one_line(tmp_path, case):
    write, message = BAD[case]
    path = write(tmp_path / "bad.gguf")
    done = subprocess.run(
        [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={path}",
         f"paths.log_dir={tmp_path / 'logs'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
