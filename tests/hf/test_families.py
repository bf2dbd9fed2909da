"""config.json -> model.* keys, for the layouts and options real checkpoints carry."""

import pytest

from lm_lab.hf.families import model_config
from lm_lab.utils.errors import ConfigError

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "max_position_embeddings": 8192,
    "hidden_act": "silu",
    "vocab_size": 128,
}


def test_older_rope_keys_read_like_rope_parameters():
    scaling = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    scaling["original_max_position_embeddings"] = 8192
    old = model_config(
        LLAMA | {"rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3"} | scaling}
    )
    new = model_config(
        LLAMA | {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5} | scaling}
    )
    assert old == new
    assert old["rope_theta"] == 5e5 and old["rope_scaling"] == {"type": "llama3"} | scaling
    assert old["n_kv_heads"] == 2 and old["norm"] == "rmsnorm" and old["tie_embeddings"]


def test_pythia_keys():
    neox = {k: v for k, v in LLAMA.items() if k not in ("num_key_value_heads", "hidden_act")}
    cfg = model_config(
        neox | {"model_type": "gpt_neox", "rotary_pct": 0.25, "rotary_emb_base": 10000}
    )
    assert cfg["rotary_fraction"] == 0.25 and cfg["parallel_residual"] and not cfg["tie_embeddings"]


def test_mistral_loads_only_without_a_shorter_sliding_window():
    mistral = LLAMA | {"model_type": "mistral"}
    assert model_config(mistral | {"sliding_window": None})["mlp"] == "swiglu"
    with pytest.raises(ConfigError, match="sliding_window=4096 < max_position_embeddings=8192"):
        model_config(mistral | {"sliding_window": 4096})


@pytest.mark.parametrize(
    "change, says",
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
        ({"attention_bias": True}, "attention_bias=True"),
        ({"head_dim": 32}, "head_dim=32"),
        ({"model_type": "t5"}, "model_type='t5'"),
    ],
)
def test_unsupported_options_are_named(change, says):
    with pytest.raises(ConfigError, match=says):
        model_config(LLAMA | change)


def test_bos_comes_from_the_tokenizer_config_or_else_its_post_processor(tmp_path):
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    from lm_lab.data.tokenization.tokenizers import PretrainedTokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["a b c"] * 5, trainers.BpeTrainer(special_tokens=["<s>", "</s>"]))
    config = {"bos_token": "<s>", "eos_token": "</s>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok.save(str(tmp_path / "tokenizer.json"))
    assert PretrainedTokenizer(tmp_path).bos_ids == []
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(tmp_path / "tokenizer.json"))
    assert PretrainedTokenizer(tmp_path).bos_ids == [0]  # Llama 3: only the post-processor says
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config | {"add_bos_token": False}))
    assert PretrainedTokenizer(tmp_path).bos_ids == []
