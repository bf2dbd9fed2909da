"""A Hugging Face folder wherever an lm_lab checkpoint goes: train.py init_from= with every
strategy, generate.py and eval.py ckpt_path=; bad folders and overrides fail in one line."""

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from lm_lab.build import build_module, load_module
from lm_lab.fit import build_datamodule
from lm_lab.hf.configure import use_pretrained
from lm_lab.hf.load import load_language_model
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

transformers = pytest.importorskip("transformers")  # the dev extra builds the tiny folders

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.batch_size=8",
    "data.max_length=48",
    "data.block_size=32",
    "data.train_windows_per_epoch=32",
    "data.eval_windows=8",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "extras.print_config=false",
    "callbacks.progress_bar=null",
    "task.baseline=null",  # no TF-IDF reference here (tests/tasks/test_classifier_baseline.py)
]
SENTENCES = ["the movie was great", "a boring film", "I loved it", "the plot made no sense"]
SENTENCES_KNOWN = [
    "the movie was great and the actors were wonderful",
    "one of the best films of the year",
]
VOCAB = 128  # config.json vocab_size of every tiny folder
STRATEGIES = ["full", "head", "partial", "lora", "adapter", "bitfit", "prompt", "ia3"]


@pytest.fixture
def hf_compose(compose):
    def _compose(*overrides):
        return compose(*TINY, *overrides, tiny=False)

    return _compose


def starting_point(ckpt: Path) -> dict[str, tuple[torch.Tensor, bool]]:
    """The run's backbone tensors by the folder's names (a LoRA/IA3 weight: the weight it
    updates, without the update), each with whether the strategy trains it."""
    module, _ = load_module(ckpt)
    trains = {n: p.requires_grad for n, p in module.backbone.named_parameters()}
    return {
        name.replace(".parametrizations.", ".").removesuffix(".original"): (
            value,
            trains.get(name, False),  # buffers train never
        )
        for name, value in module.backbone.state_dict().items()
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_three_steps_from_a_pretrained_folder(hf_compose, hf_dirs, strategy):
    """The run's checkpoint holds the folder's weights: frozen tensors exactly, trained ones
    within what 3 warmup steps of AdamW move them (lr 1e-3 at most), while the folder's
    weights sit ~0.1 from any random init (a run that never loaded them fails here)."""
    folder = hf_dirs["llama" if strategy in ("lora", "ia3", "prompt") else "gpt_neox"]
    cfg = hf_compose("task=classify", f"init_from={folder}", f"finetune={strategy}")
    result = train(cfg)
    assert cfg.model.norm == ("rmsnorm" if "llama" in str(folder) else "layernorm")
    assert result["params"]["all"]["trainable"] > 0
    assert "test/acc" in result["metrics"]
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    run = starting_point(checkpoints / "best.ckpt")
    folder_weights = load_language_model(folder)[0].backbone.state_dict()
    del folder_weights["lm_head.weight"]  # gpt_neox and this llama are untied: no classify head
    assert set(folder_weights) <= set(run)
    steps_bound = 3 * cfg.task.optimizer.lr
    for name, expected in folder_weights.items():
        got, trained = run[name]
        if trained:
            torch.testing.assert_close(got, expected, atol=steps_bound, rtol=0, msg=name)
        else:
            assert torch.equal(got, expected), f"{name} ({strategy} freezes it) changed"
    trained = sorted(name for name in folder_weights if run[name][1])
    assert bool(trained) == (strategy in ("full", "partial", "bitfit"))
    if strategy == "lora":  # the small artefact rebuilds on the folder's weights
        ids = torch.tensor([[5, 9, 14, 20, 31]])
        small, _ = load_module(checkpoints / "adapter.pt")
        full, _ = load_module(checkpoints / "best.ckpt")
        torch.testing.assert_close(small(ids), full(ids))


def test_continued_pretraining_starts_from_the_folders_loss(hf_compose, hf_dirs, tmp_path):
    """The folder's model knows the sentences (tests/hf/conftest.py trains it on them, each as
    <s> ... </s>, as the corpus writes them): untrained, the run's test loss is the folder's own
    loss on the run's test windows computed by transformers; 3 steps on keep it below 40% of
    uniform (ln 128 = 4.85), where a model whose weights were never loaded starts."""
    folder = hf_dirs["gpt_neox"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "validation"):
        (corpus / f"{split}.txt").write_text("".join(f"<s>{s}</s>" for s in SENTENCES_KNOWN * 8))
    data = ["task=generate", f"init_from={folder}", "data=text", f"data.root={corpus}"]
    untrained = hf_compose(*data, "train=false")
    at_start = train(untrained)["metrics"]["test/loss"]
    assert at_start == pytest.approx(transformers_loss(folder, untrained), abs=1e-4)
    cfg = hf_compose(*data, "model.dropout=0.1")
    loss = train(cfg)["metrics"]["test/loss"]
    assert cfg.model.dropout == 0.1 and not cfg.model.tie_embeddings
    assert loss < min(at_start + 0.01, 0.4 * math.log(VOCAB))  # random init: ~ln 128


def transformers_loss(folder: Path, cfg: DictConfig) -> float:
    """The folder's loss, computed by transformers, on the test windows of a run's config (its
    cfg.tokenizer is the folder's, set by train)."""
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    total = count = 0
    with torch.no_grad():
        for batch in build_datamodule(cfg, hf_init=True).test_dataloader():
            logits = theirs(input_ids=batch["input_ids"]).logits  # (B, T, V)
            targets = batch["targets"]  # (B, T), -100 where no loss is taken
            total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
            count += int((targets != -100).sum())
    return float(total / count)


@pytest.mark.parametrize("override", ["model=bilstm", "model.d_model=32", "+model.foo=1"])
def test_model_overrides_that_contradict_the_folder_fail(hf_compose, hf_dirs, override):
    cfg = hf_compose(f"init_from={hf_dirs['gpt2']}", override)
    with pytest.raises(ConfigError, match=f"drop {re.escape(override)}"):
        train(cfg)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _shard(folder: Path, index: dict | None = None, misplace: bool = False) -> None:
    """model.safetensors cut into two shards listed by model.safetensors.index.json (`index`
    replaces what the index holds; `misplace` names the first tensor's shard wrongly)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2]}
    shards["model-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for shard, held in shards.items():
        save_file({name: tensors[name] for name in held}, str(folder / shard))
        weight_map |= dict.fromkeys(held, shard)
    if misplace:
        weight_map[names[0]] = "model-00002-of-00002.safetensors"
    content = {"metadata": {}, "weight_map": weight_map} if index is None else index
    (folder / "model.safetensors.index.json").write_text(json.dumps(content))


def _without_vocab_size(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["vocab_size"]
    (folder / "config.json").write_text(json.dumps(config))


FIRST = "transformer.h.0.attn.c_attn.bias"  # the first tensor name of the GPT-2 folder
BAD_FOLDERS = {  # name: (how the gpt2 folder is broken, what the one line says)
    "no_config": (
        lambda d: (d / "config.json").unlink(),
        "no config.json in it; pass a Hugging Face model folder",
    ),
    "config_truncated": (
        lambda d: _truncate(d / "config.json"),
        "config.json is not valid JSON (",
    ),
    "config_not_an_object": (
        lambda d: (d / "config.json").write_text("[1, 2]"),
        "config.json holds a JSON list, not an object of settings",
    ),
    "no_vocab_size": (_without_vocab_size, "config.json has no vocab_size; a gpt2 config.json"),
    "unsupported": (lambda d: _edit_config(d, model_type="bert"), "model_type='bert'"),
    "no_weights": (
        lambda d: (d / "model.safetensors").unlink(),
        "neither model.safetensors nor model.safetensors.index.json; only safetensors load",
    ),
    "pytorch_model_bin_only": (
        lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"),
        "only safetensors load",
    ),
    "random_safetensors": (
        lambda d: (d / "model.safetensors").write_bytes(random.Random(0).randbytes(4096)),
        "model.safetensors is not a readable safetensors file (",
    ),
    "truncated_safetensors": (
        lambda d: _truncate(d / "model.safetensors"),
        "model.safetensors is not a readable safetensors file (",
    ),
    "truncated_tokenizer": (
        lambda d: _truncate(d / "tokenizer.json"),
        "tokenizer.json is not valid JSON (",
    ),
    "truncated_index": (
        lambda d: (_shard(d), _truncate(d / "model.safetensors.index.json")),
        "model.safetensors.index.json is not valid JSON (",
    ),
    "index_without_weight_map": (
        lambda d: _shard(d, index={"metadata": {"total_size": 1}}),
        'model.safetensors.index.json has no "weight_map" object',
    ),
    "index_names_the_wrong_shard": (
        lambda d: _shard(d, misplace=True),
        f"model.safetensors.index.json puts {FIRST} in model-00002-of-00002.safetensors, "
        "which does not hold it",
    ),
    "eos_outside_the_vocabulary": (
        lambda d: _edit_config(d, eos_token_id=50256),
        "eos_token_id=50256 lies outside the vocabulary (config.json vocab_size=128)",
    ),
    "small_vocab": (lambda d: _edit_config(d, vocab_size=50), "tokenizer has"),
}


@pytest.fixture
def bad_folder(hf_dirs, tmp_path):
    """bad_folder(name) -> a copy of the GPT-2 folder broken as BAD_FOLDERS[name] says."""

    def _make(name: str) -> Path:
        folder = _copy(hf_dirs["gpt2"], tmp_path / name)
        BAD_FOLDERS[name][0](folder)
        return folder

    return _make


@pytest.mark.parametrize("name", BAD_FOLDERS)
def test_bad_folders_fail_in_one_line(hf_compose, bad_folder, name):
    folder = bad_folder(name)
    with pytest.raises(ConfigError) as err:
        train(hf_compose(f"init_from={folder}"))
    key = "tokenizer.path" if name == "small_vocab" else "init_from"  # the file that is wrong
    assert str(err.value).startswith(f"{key}={folder}: ")
    assert BAD_FOLDERS[name][1] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "script, key, name",
    [
        ("train.py", "init_from", "index_names_the_wrong_shard"),
        ("generate.py", "ckpt_path", "truncated_safetensors"),
        ("eval.py", "ckpt_path", "eos_outside_the_vocabulary"),
    ],
)
def test_bad_folders_fail_in_one_line_from_the_shell(bad_folder, tmp_path, script, key, name):
    folder = bad_folder(name)
    done = cli(script, f"{key}={folder}", f"paths.log_dir={tmp_path / 'logs'}")
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err, err[-2000:]
    assert err.startswith(f"error: {key}={folder}: ") and BAD_FOLDERS[name][1] in err


def test_train_generate_and_eval_from_the_shell(hf_dirs, tmp_path):
    folder = hf_dirs["qwen2"]
    logs = f"paths.log_dir={tmp_path}"
    trained = cli("train.py", "task=classify", f"init_from={folder}", "finetune=lora", logs, *TINY)
    assert trained.returncode == 0, trained.stderr[-2000:]
    sampled = cli(
        "generate.py", f"ckpt_path={folder}", "prompt=the movie was", "max_new_tokens=5", logs
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert "the movie was" in sampled.stdout
    reviews = tmp_path / "reviews"  # sst2-like labelled CSVs, so the sst2 template applies
    reviews.mkdir()
    rows = "text,label\n" + "".join(
        f"{s},{'positive' if i % 2 else 'negative'}\n" for i, s in enumerate(SENTENCES)
    )
    for split in ("train", "validation", "test"):
        (reviews / f"{split}.csv").write_text(rows)
    icl = [
        "mode=icl",
        "data=sst2",
        f"data.root={reviews}",
        "icl.shots=[0,1]",
        "icl.seeds=1",
        "icl.max_queries=4",
        "trainer.accelerator=cpu",
    ]
    evaluated = cli("eval.py", f"ckpt_path={folder}", *icl, logs)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]


def cli(script, *overrides):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_length_mode_on_a_pretrained_folder(compose, hf_dirs, tmp_path):
    from lm_lab.evaluate import run as evaluate

    texts = tmp_path / "reviews"
    texts.mkdir()
    rows = "text,label\n" + "".join(f"{s} {s},positive\n" for s in SENTENCES * 10)
    for split in ("train", "validation", "test"):
        (texts / f"{split}.csv").write_text(rows)
    cfg = compose(
        f"ckpt_path={hf_dirs['gpt2']}",
        "mode=length",
        "data=csv",
        f"data.root={texts}",
        "eval_lengths=[16,200]",
        "length.max_windows=2",
        "length.induction_sequences=2",
        config_name="eval",
    )
    rows = evaluate(cfg)["rows"]
    assert rows[0]["ppl"] > 1
    assert rows[1]["ppl"] is None  # GPT-2's learned positions stop at n_positions=128


def test_a_hub_id_not_in_the_cache_fails_in_one_line(hf_compose, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ConfigError, match="not found on the Hugging Face Hub or in its cache"):
        train(hf_compose("init_from=no-such-org/no-such-model"))


def test_gradient_checkpointing_reaches_an_imported_model(hf_compose, hf_dirs):
    """model.gradient_checkpointing is one of the keys an init_from=<hf dir> run still takes:
    the model group is replaced by config.json, the override survives into the built encoder."""
    cfg = hf_compose(
        "task=classify", f"init_from={hf_dirs['llama']}", "model.gradient_checkpointing=true"
    )
    pretrained = use_pretrained(cfg)
    module = build_module(cfg, pretrained.tokenizer(), ["neg", "pos"])
    assert cfg.model.n_kv_heads is not None  # the folder's model, not conf/model
    assert module.backbone.encoder.gradient_checkpointing
