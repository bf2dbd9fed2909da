"""lm_lab -> Hugging Face: exported folders load in transformers with the same logits, and
`python -m lm_lab.export` never mixes its files with a folder's old ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lm_lab.build import build_module, load_module
from lm_lab.checkpoint import CheckpointMeta
from lm_lab.data.tokenization.tokenizers import BPETokenizer
from lm_lab.export import main as export_main
from lm_lab.hf.export import export
from lm_lab.hf.load import load_language_model
from lm_lab.utils.errors import ConfigError

transformers = pytest.importorskip("transformers")  # the dev extra


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


ROOT = Path(__file__).resolve().parents[2]
EXPORTED_AS = {"mistral": "llama", "gpt2_untied": "gpt2", "gpt_neox_no_attention_bias": "gpt_neox"}
FAMILIES = ["gpt2", "llama", "qwen2", "gpt_neox", *EXPORTED_AS]
IDS = torch.tensor([[5, 17, 33, 9, 60, 61, 7, 12, 40, 3, 77, 21]])
TEXTS = ["the quick brown fox jumps over the dog"] * 5


def hf_logits(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()(IDS).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_an_imported_model_exports_back_with_the_same_logits(hf_dirs, family, tmp_path):
    assert export_main([str(hf_dirs[family]), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == EXPORTED_AS.get(family, family)
    torch.testing.assert_close(hf_logits(tmp_path / "out"), hf_logits(hf_dirs[family]))


LLAMA = ["model.norm=rmsnorm", "model.mlp=swiglu", "model.bias=false", "model.n_kv_heads=2"]
GPT2 = ["model.positions=learned", "model.mlp=gelu_tanh"]
SCRATCH = {
    "llama": ("llama", LLAMA),
    "gpt2": ("gpt2", [*GPT2, "model.bias=false"]),
    "gpt2_untied": ("gpt2", [*GPT2, "model.tie_embeddings=false"]),
    "gpt_neox": ("gpt_neox", ["model.parallel_residual=true", "model.rotary_fraction=0.5"]),
    # the sizer picks d_model and d_ff: config.json must hold those, not the config's null
    "llama_sized": ("llama", [*LLAMA, "model.param_budget=170000"]),  # d_model 48, d_ff 223
}


def scratch_module(compose, *overrides: str):
    """A language model built here (BPE vocabulary 300), every weight away from its init."""
    cfg = compose("task=generate", "model.n_heads=4", *overrides)
    tokenizer = BPETokenizer(vocab_size=300).fit(TEXTS)
    torch.manual_seed(0)
    module = build_module(cfg, tokenizer, None).eval()
    for p in module.parameters():  # norms and biases away from their init
        p.add_(0.05 * torch.randn_like(p))
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    return module, tokenizer


@pytest.mark.parametrize("name", SCRATCH)
def test_a_model_trained_from_scratch_exports_as_the_family_its_options_match(
    compose, name, tmp_path
):
    family, overrides = SCRATCH[name]
    module, tokenizer = scratch_module(compose, *overrides)
    export(module, module.run_config, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == family
    fc = module.backbone.encoder.layers[0].mlp.fc  # Linear (D, d_ff)
    assert config.get("intermediate_size", config.get("n_inner")) == fc.out_features
    if name == "llama_sized":  # the case that went wrong: d_ff is not 4 * d_model here
        assert fc.out_features != 4 * fc.in_features
    torch.testing.assert_close(hf_logits(tmp_path / "out"), module(IDS), atol=1e-4, rtol=1e-4)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert theirs("the fox", add_special_tokens=False).input_ids == tokenizer.encode("the fox")


def test_an_option_without_family_fails_in_one_line(compose, tmp_path):
    cfg = compose("task=generate", "model.positions=sinusoidal")
    module = build_module(cfg, BPETokenizer(300).fit(["a b c"] * 3), None)
    with pytest.raises(ConfigError, match="model.positions=sinusoidal has no Hugging Face family"):
        export(module, OmegaConf.to_container(cfg, resolve=True), tmp_path / "out")


def test_lora_merges_and_writes_a_peft_adapter(hf_dirs, tmp_path):
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


@pytest.fixture
def llama_ckpt(compose, tmp_path) -> Path:
    """A run dir holding a bare checkpoint of a small Llama-style LM (no training needed)."""
    module, _ = scratch_module(compose, *LLAMA)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    CheckpointMeta.of(module).save(run / "checkpoints" / "best.ckpt", module.state_dict())
    module.tokenizer.save(run / "tokenizer.json")  # beside it: lm_lab_tokenizer.json
    return run


def one_line(capsys) -> str:
    """What export_main printed on stderr: exactly one line."""
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def test_export_into_a_users_folder_is_refused_unless_forced(llama_ckpt, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    (out / "tokenizer_config.json").write_text('{"mine": 2}')
    done = subprocess.run(
        [sys.executable, "-m", "lm_lab.export", str(llama_ckpt), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: export: out={out} is not empty (config.json, tokenizer_config.json); choose a "
        "new folder, or pass --force to replace the whole folder with the export"
    )
    assert json.loads((out / "config.json").read_text()) == {"mine": 1}
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"mine": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "run"]  # no staging left
    assert export_main([str(llama_ckpt), str(out), "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


def test_bad_arguments_are_answered_before_lightning_loads(tmp_path):
    """The argument checks run before the ~4 s of Lightning imports (was ~9 s for a typo)."""
    script = (
        "import sys; from lm_lab.export import main; "
        f"code = main([{str(tmp_path / 'missing.ckpt')!r}, {str(tmp_path / 'out')!r}]); "
        "print(code, 'lightning' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "missing.ckpt: no such file or folder" in done.stderr


def test_an_empty_folder_takes_the_export_without_force(llama_ckpt, tmp_path):
    (tmp_path / "made_first").mkdir()
    assert export_main([str(llama_ckpt), str(tmp_path / "made_first")]) == 0
    assert (tmp_path / "made_first" / "model.safetensors").is_file()


def test_force_over_a_sharded_folder_leaves_a_clean_export(llama_ckpt, tmp_path):
    """A folder of another model in shards: without --force it stays loadable; with it, the
    export replaces it whole (no old shard, no index for transformers to follow)."""
    old = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=64,
    )  # fmt: skip
    out = tmp_path / "out"
    transformers.AutoModelForCausalLM.from_config(old).save_pretrained(out, max_shard_size="20KB")
    shards = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in shards
    assert export_main([str(llama_ckpt), str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == shards
    assert export_main([str(llama_ckpt), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    module, _ = load_module(llama_ckpt / "checkpoints" / "best.ckpt")
    torch.testing.assert_close(hf_logits(out), module(IDS), atol=1e-4, rtol=1e-4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_export_leaves_the_old_folder_as_it_was(llama_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lm_lab.hf.export.save_file", disk_full)
    module, _ = load_module(llama_ckpt / "checkpoints" / "best.ckpt")
    with pytest.raises(ConfigError, match=f"cannot write {out} \\(No space left on device\\)"):
        export(module, module.run_config, out, force=True)
    assert [p.name for p in tmp_path.iterdir() if p.name != "run"] == ["out"]
    assert (out / "keep.txt").read_text() == "old"


@pytest.mark.parametrize(
    "args, says",
    [
        (["{run}", "{run}", "--force"], "export: out={run} holds the model being exported"),
        (["{run}", "{tmp}", "--force"], "export: out={tmp} holds the model being exported"),
        (["{run}", "/proc/lm_lab_export"], "cannot write /proc/lm_lab_export"),  # root too
        (["{run}", "{run}/tokenizer.json"], "export: out={run}/tokenizer.json is a file"),
        (["{tmp}/nothing", "{tmp}/out"], "error: source={tmp}/nothing: no such file or folder"),
        (["{tmp}", "{tmp}/out"], "source={tmp}: no config.json in it"),
    ],
)
def test_export_arguments_fail_in_one_line(llama_ckpt, tmp_path, capsys, args, says):
    """The run dir exported onto itself (it once lost lm_lab_tokenizer.json), an unwritable
    folder, a file, a missing source: one line, exit 2, nothing of the run dir touched."""
    held = sorted(p.relative_to(llama_ckpt) for p in llama_ckpt.rglob("*"))
    fill = {"run": llama_ckpt, "tmp": tmp_path}
    assert export_main([a.format(**fill) for a in args]) == 2
    assert says.format(**fill) in one_line(capsys)
    assert sorted(p.relative_to(llama_ckpt) for p in llama_ckpt.rglob("*")) == held
