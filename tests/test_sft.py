"""task=sft as a user runs it: `train.py task=sft` on their JSON-lines folder, `generate.py
chat=true` on the result (rendered as it was trained), every fine-tuning strategy, a LoRA
export with its PEFT adapter, and each bad input answered in one line (exit 2) before training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.build import build_module, load_module
from lm_lab.data.tokenization.conversation import encode_prompt
from lm_lab.finetune.setup import prepare_finetune
from lm_lab.generate import chat_inputs
from lm_lab.train import run as train

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = ("task=sft", "tokenizer=char", "model.n_layers=1", "trainer.max_steps=4")
CHATML = (  # SmolLM2's template, short system message
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write(root: Path, train: list[dict], validation: list[dict] | None = None) -> Path:
    root.mkdir(exist_ok=True)
    for split, records in (("train", train), ("validation", validation or VALIDATION)):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


TRAIN = [{"prompt": f"add {i} and {i}", "response": f"{2 * i}"} for i in range(24)]
VALIDATION = [
    {"messages": [{"role": "user", "content": f"add {i} and {i}"},
                  {"role": "assistant", "content": f"{2 * i}"}]}
    for i in range(30, 36)
]  # fmt: skip


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "HYDRA_FULL_ERROR")}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def train_pretrained(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`train.py` on an imported model: the tests' TINY settings but the model's own keys."""
    quiet = (
        "data.batch_size=4", "trainer.accelerator=cpu", "trainer.enable_model_summary=false",
        "extras.print_config=false", "callbacks.progress_bar=null", "task.baseline=null",
    )  # fmt: skip
    return run("train.py", *quiet, f"paths.log_dir={tmp_path / 'logs'}", *args, cwd=tmp_path)


def best_ckpt(logs: Path) -> Path:
    (path,) = logs.rglob("best.ckpt")
    return path


def test_train_then_chat_with_the_plain_template(train_cli, tmp_path):
    data = write(tmp_path / "data", TRAIN)
    packed = ("data.packing=true", "data.max_length=128")
    done = train_cli(*TINY_SFT, "data=jsonl", f"data.root={data}", *packed)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data.packing=true: 24 conversations in" in done.stderr + done.stdout
    ckpt = best_ckpt(tmp_path / "logs")
    metrics = json.loads((ckpt.parents[1] / "metrics.json").read_text())
    assert {"val/loss", "val/ppl", "test/loss"} <= metrics["metrics"].keys()
    assert metrics["data"]["train/examples"] == 24 and metrics["data"]["train/padding_saved"] > 0
    chat = run(
        "generate.py", f"ckpt_path={ckpt}", "chat=true", "prompt=add 2 and 2",
        "max_new_tokens=12", f"paths.log_dir={tmp_path / 'gen'}", cwd=tmp_path,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr[-3000:]
    (samples,) = (tmp_path / "gen").rglob("samples.jsonl")
    (sample,) = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sample["prompt"] == "add 2 and 2" and "<|end|>" not in sample["completion"]
    tested = run("eval.py", f"ckpt_path={ckpt}", f"paths.log_dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    (written,) = (tmp_path / "eval").rglob("metrics.json")
    assert json.loads(written.read_text())["metrics"]["test/ppl"] > 1  # on its own data again


def test_chat_renders_the_prompt_as_the_run_was_trained(compose, tmp_path):
    data = write(tmp_path / "data", TRAIN)
    cfg = compose(
        *TINY_SFT, "data=jsonl", f"data.root={data}", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "test=false",
    )  # fmt: skip
    train(cfg)
    module, _ = load_module(Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt")
    gen = compose("ckpt_path=x", "chat=true", "system=add", config_name="generate")
    (ids,) = chat_inputs(gen, module, ["add 1 and 1"])
    turns = [{"role": "system", "content": "add"}, {"role": "user", "content": "add 1 and 1"}]
    assert ids == encode_prompt(module.tokenizer, turns, module.template)
    assert module.tokenizer.decode(ids) == "add\n\n### User:\nadd 1 and 1\n\n### Assistant:\n"


@pytest.mark.parametrize(
    "strategy", ["full", "lora", "ia3", "bitfit", "prompt", "head", "adapter", "partial"]
)
def test_every_fine_tuning_strategy_builds_and_steps(compose, tmp_path, strategy):
    data = write(tmp_path / "data", TRAIN)
    untied = ["model.tie_embeddings=false"] if strategy == "head" else []  # a head of its own
    cfg = compose(*TINY_SFT, "data=jsonl", f"data.root={data}", f"finetune={strategy}", *untied)
    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    dm.setup("fit")
    torch.manual_seed(0)
    module = prepare_finetune(cfg, build_module(cfg, dm.tokenizer, None))
    trained = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    loss = module.loss(next(iter(dm.train_dataloader())))[0]
    loss.backward()
    optimizer.step()
    changed = [n for n, p in module.named_parameters() if n in trained and not p.equal(trained[n])]
    assert torch.isfinite(loss) and changed


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    """A tiny random Llama folder: a character tokenizer with ChatML's special tokens and its
    template, EOS <|im_end|>."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import AddedToken, Tokenizer, decoders, models

    folder = tmp_path_factory.mktemp("chat") / "model"
    folder.mkdir()
    specials = ["<|im_start|>", "<|im_end|>", "<s>"]
    chars = "abcdefghijklmnopqrstuvwxyz0123456789 .,?!\n"
    vocab = {t: i for i, t in enumerate(specials + list(chars))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.decoder = decoders.Fuse()
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "<|im_end|>", "chat_template": CHATML}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            bos_token_id=2, eos_token_id=1,
        )
    ).save_pretrained(folder)  # fmt: skip
    return folder


def test_lora_on_a_chat_model_exports_a_peft_adapter_and_chats(chat_model, tmp_path):
    data = write(tmp_path / "data", TRAIN)
    done = train_pretrained(
        tmp_path, "task=sft", f"init_from={chat_model}", "finetune=lora", "data=jsonl",
        f"data.root={data}", "trainer.limit_train_batches=3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = best_ckpt(tmp_path / "logs")
    out = tmp_path / "exported"
    export = subprocess.run(
        [sys.executable, "-m", "lm_lab.export", str(ckpt), str(out)],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "base").is_dir()
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHATML
    chat = run(
        "generate.py", f"ckpt_path={ckpt}", "chat=true", "prompt=add 1 and 1",
        "max_new_tokens=5", f"paths.log_dir={tmp_path / 'gen'}", cwd=tmp_path,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr[-3000:]


NO_REPLY = [{"messages": [{"role": "user", "content": "hi"}]}]
TOOL = [{"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"},
                      {"role": "assistant", "content": "ok"}]}]  # fmt: skip
LONG = [{"prompt": "a" * 200, "response": "b"}]


@pytest.mark.parametrize(
    ("records", "overrides", "message"),
    [
        (
            NO_REPLY + TRAIN,
            [],
            "train.jsonl:1: no assistant turn (roles: user); every conversation",
        ),
        (TRAIN + TOOL, [], "train.jsonl:25: role 'tool': the plain template knows system, user"),
        (LONG, [], "no conversation of the train split fits data.max_length=64 (1 too long"),
        (TRAIN, ["task.causal=false"], "task.causal=false: task=sft trains a causal language"),
        (TRAIN, ["model=bilstm", "data.packing=true"], "data.packing=true: BiLSTMEncoder cannot"),
        (TRAIN, ["data.packing=true", "finetune=prompt"], "finetune=prompt prepends its vectors"),
        (TRAIN, ["data.truncation=left"], "data.truncation=left: must be one of skip, cut"),
        (TRAIN, ["finetune=head"], "finetune=head: task=sft's output layer is the token embed"),
    ],
    ids=[
        "no_assistant",
        "unknown_role",
        "too_long",
        "bidirectional",
        "lstm_packing",
        "prompt_packing",
        "truncation",
        "tied_head",
    ],
)
def test_bad_input_is_one_line_exit_2_before_training(
    train_cli, tmp_path, records, overrides, message
):
    data = write(tmp_path / "data", records)
    done = train_cli(*TINY_SFT, "data=jsonl", f"data.root={data}", *overrides)
    err = done.stderr.strip()
    assert done.returncode == 2, err[-3000:]
    assert "\n" not in err and err.startswith("error: ") and message in err, err[-3000:]
    assert not list((tmp_path / "logs").rglob("*.ckpt"))  # nothing trained


@pytest.mark.slow
def test_a_few_lora_sft_steps_on_smollm2_then_chat(tmp_path):
    data = write(tmp_path / "data", TRAIN[:8])
    done = train_pretrained(
        tmp_path, "task=sft", "init_from=smollm2", "finetune=lora", "data=jsonl",
        f"data.root={data}", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "logs").rglob("metrics.json")).read_text())["metrics"]
    assert metrics["val/loss"] < 10 and metrics["val/ppl"] == pytest.approx(
        torch.tensor(metrics["val/loss"]).exp().item(), rel=1e-4
    )
    chat = run(
        "generate.py", f"ckpt_path={best_ckpt(tmp_path / 'logs')}", "chat=true",
        "prompt=add 3 and 3", "max_new_tokens=8", f"paths.log_dir={tmp_path / 'gen'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr[-3000:]
