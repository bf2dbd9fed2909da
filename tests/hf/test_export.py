"""lm_lab -> Hugging Face: exported folders load in transformers with the same logits."""

import json

import pytest
import torch

from lm_lab.build import build_module
from lm_lab.data.tokenizers import BPETokenizer
from lm_lab.export import main as export_main
from lm_lab.hf.export import export
from lm_lab.hf.load import load_language_model
from lm_lab.utils.errors import ConfigError

transformers = pytest.importorskip("transformers")  # the dev extra


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


FAMILIES = ["gpt2", "llama", "qwen2", "gpt_neox"]
IDS = torch.tensor([[5, 17, 33, 9, 60, 61, 7, 12, 40, 3, 77, 21]])


def hf_logits(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()(IDS).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_an_imported_model_exports_back_with_the_same_logits(hf_dirs, family, tmp_path):
    assert export_main([str(hf_dirs[family]), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == family
    torch.testing.assert_close(hf_logits(tmp_path / "out"), hf_logits(hf_dirs[family]))


SCRATCH = {
    "llama": ["model.norm=rmsnorm", "model.mlp=swiglu", "model.bias=false", "model.n_kv_heads=2"],
    "gpt2": ["model.positions=learned", "model.mlp=gelu_tanh", "model.bias=false"],
    "gpt_neox": ["model.parallel_residual=true", "model.rotary_fraction=0.5"],
}


@pytest.mark.parametrize("family", SCRATCH)
def test_a_model_trained_from_scratch_exports_as_the_family_its_options_match(
    compose, family, tmp_path
):
    cfg = compose("task=generate", "model.n_heads=4", *SCRATCH[family])
    tokenizer = BPETokenizer(vocab_size=300).fit(["the quick brown fox jumps over the dog"] * 5)
    torch.manual_seed(0)
    module = build_module(cfg, tokenizer, None).eval()
    for p in module.parameters():  # norms and biases away from their init
        p.add_(0.05 * torch.randn_like(p))
    from omegaconf import OmegaConf

    export(module, OmegaConf.to_container(cfg, resolve=True), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == family
    torch.testing.assert_close(hf_logits(tmp_path / "out"), module(IDS), atol=1e-4, rtol=1e-4)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert theirs("the fox", add_special_tokens=False).input_ids == tokenizer.encode("the fox")


def test_an_option_without_family_fails_in_one_line(compose, tmp_path):
    cfg = compose("task=generate", "model.positions=sinusoidal")
    from omegaconf import OmegaConf

    module = build_module(cfg, BPETokenizer(300).fit(["a b c"] * 3), None)
    with pytest.raises(ConfigError, match="model.positions=sinusoidal has no Hugging Face family"):
        export(module, OmegaConf.to_container(cfg, resolve=True), tmp_path / "out")


def test_lora_merges_and_writes_a_peft_adapter(hf_dirs, tmp_path):
    from omegaconf import OmegaConf
    from peft import PeftModel

    from lm_lab.finetune.base import apply_finetune

    module, cfg = load_language_model(hf_dirs["llama"])
    lora = {"_target_": "lm_lab.finetune.lora.LoRA", "rank": 4, "alpha": 8.0}
    lora["targets"] = ["attn.q", "attn.v", "mlp.up"]
    cfg = OmegaConf.merge(cfg, {"finetune": lora})
    apply_finetune(cfg, module)
    torch.manual_seed(0)
    for name, p in module.named_parameters():
        if "lora_B" in name:
            p.normal_(std=0.1)  # a trained update, not the zero init
    ours = module(IDS)
    export(module, OmegaConf.to_container(cfg), tmp_path / "out")
    torch.testing.assert_close(hf_logits(tmp_path / "out"), ours, atol=1e-4, rtol=1e-4)
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "base")
    peft = PeftModel.from_pretrained(base, tmp_path / "out" / "adapter").eval()
    torch.testing.assert_close(peft(IDS).logits, ours, atol=1e-4, rtol=1e-4)
