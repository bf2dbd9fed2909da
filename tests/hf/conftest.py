"""Tiny Hugging Face models, one per family and variant, saved once per session: 2 layers,
width 64, a 128-row embedding and a BPE tokenizer trained on a few sentences. Each model is
trained on those sentences for a few steps (with transformers), so that it knows them: greedy
decoding continues a prompt with varied tokens, and a loss on them sits far below uniform, which
a model whose weights were not loaded cannot reach."""

import json
from pathlib import Path

import pytest
import torch

try:
    import transformers
except ImportError:  # the dev extra; tests that need the tiny models skip without it
    transformers = None

SENTENCES = [
    "the movie was great and the actors were wonderful",
    "a terrible film, boring from start to end",
    "I loved the music but the story was weak",
    "one of the best films of the year",
    "the plot made no sense at all",
] * 4
VOCAB = 128  # embedding rows; the tokenizer has fewer, so spare rows exist
LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 500.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
COMMON = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, initializer_range=0.15)
GPT2 = dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, **COMMON)
SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **COMMON)
SHAPE |= dict(max_position_embeddings=128)
LLAMA = SHAPE | dict(intermediate_size=96, num_key_value_heads=2, tie_word_embeddings=False)
NEOX = SHAPE | dict(intermediate_size=128, tie_word_embeddings=False)
CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(**GPT2),
    "gpt2_untied": lambda: transformers.GPT2Config(**GPT2, tie_word_embeddings=False),
    "llama": lambda: transformers.LlamaConfig(**LLAMA, rope_parameters=LLAMA3),
    "mistral": lambda: transformers.MistralConfig(**LLAMA, sliding_window=None),
    "qwen2": lambda: transformers.Qwen2Config(
        **SHAPE, intermediate_size=96, num_key_value_heads=4, tie_word_embeddings=True
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        **NEOX, rotary_pct=0.5, use_parallel_residual=True
    ),
    "gpt_neox_no_attention_bias": lambda: transformers.GPTNeoXConfig(**NEOX, attention_bias=False),
}
FAMILIES = list(CONFIGS)
BOS_FIRST = ("llama", "mistral")  # their tokenizer_config says add_bos_token
WITH_PAD = ("gpt_neox", "gpt_neox_no_attention_bias")  # their tokenizer has a <pad> token
TRAIN_STEPS, TRAIN_LR = 60, 5e-3  # enough for greedy decoding to recite the sentences


def train_tokenizer(folder: Path, add_bos: bool, pad: bool) -> None:
    """tokenizer.json (byte-level BPE: <pad>?, <s>, </s> first) + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unused>", "<s>", "</s>", *(["<pad>"] if pad else [])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:0],
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": add_bos}
    if pad:
        config["pad_token"] = "<pad>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def sentence_batch(folder: Path) -> torch.Tensor:
    """The distinct sentences as <s> ids </s>, right-padded with </s>: (5, T)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    rows = [[1, *tok.encode(s, add_special_tokens=False).ids, 2] for s in SENTENCES[:5]]
    width = max(map(len, rows))
    return torch.tensor([row + [2] * (width - len(row)) for row in rows])


def save_family(family: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[family]())
    with torch.no_grad():  # norms and biases away from their init, so mapping them matters
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    folder.mkdir(parents=True)
    train_tokenizer(folder, add_bos=family in BOS_FIRST, pad=family in WITH_PAD)
    ids = sentence_batch(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a saved tiny model folder (built once per session)."""
    if transformers is None:
        pytest.skip("transformers is not installed (pip install -e .[dev])")
    root = tmp_path_factory.mktemp("hf")
    return {family: save_family(family, root / family) for family in FAMILIES}
