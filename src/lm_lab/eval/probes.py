"""Length generalisation and induction: what a trained LM does at lengths it was not trained on.

For each evaluation length L the LM scores its validation text in windows of L tokens
(perplexity) and random token sequences of L tokens whose second half repeats the first
(induction accuracy: the share of second-copy tokens predicted exactly, 1/vocab by chance).
A model with learned positions cannot go past `max_len`; its row says so instead of failing.
"""

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from lm_lab.data.loaders.language_modeling import IGNORE, EvalWindows, token_stream
from lm_lab.data.loaders.synthetic import Induction, generate
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.tasks.base import TaskModule
from lm_lab.tasks.metrics import LANGUAGE_MODELS
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger
from lm_lab.utils.markdown import markdown_table

log = get_logger(__name__)


@torch.no_grad()
def perplexity(module: TaskModule, stream: torch.Tensor, length: int, cfg: DictConfig) -> float:
    """exp(mean next-token loss) over windows of `length` tokens of the stream."""
    windows = EvalWindows(stream, length, cfg.batch_size, cfg.max_windows)
    total, count = 0.0, 0
    for i in range(len(windows)):
        batch = windows[i]
        logits = module(batch["input_ids"])  # (B, T, V)
        targets = batch["targets"].flatten()
        total += F.cross_entropy(logits.flatten(0, 1), targets, reduction="sum").item()
        count += int((targets != IGNORE).sum())
    return math.exp(total / count)


def induction_tokens(tokenizer: Tokenizer) -> tuple[int, int]:
    """The id range [low, high) that random sequences may use: every id but pad, which is
    either the first (char, bpe) or the last (byte) id."""
    if tokenizer.pad_id == 0:
        return 1, tokenizer.vocab_size
    return 0, tokenizer.pad_id


@torch.no_grad()
def induction_accuracy(module: TaskModule, length: int, n: int, seed: int) -> float:
    """Accuracy on the second copy of n random sequences of `length` tokens."""
    low, high = induction_tokens(module.tokenizer)
    inputs, targets = generate(Induction(high, length, low), n, seed)
    scored = targets != IGNORE  # (n, T)
    predicted = module(inputs).argmax(-1)  # (n, T)
    return (predicted == targets)[scored].float().mean().item()


def length_row(
    module: TaskModule, stream: torch.Tensor, length: int, cfg: DictConfig
) -> dict[str, Any]:
    row: dict[str, Any] = {"length": length, "ppl": None, "induction_acc": None, "note": ""}
    max_len = getattr(module.backbone.encoder, "max_len", None)
    if max_len is not None and length > max_len:
        row["note"] = f"not supported: learned positions end at max_len={max_len}"
        return row
    if len(stream) < length + 1:
        row["note"] = f"validation text has only {len(stream)} tokens"
    else:
        row["ppl"] = perplexity(module, stream, length, cfg)
    row["induction_acc"] = induction_accuracy(module, length, cfg.induction_sequences, cfg.seed)
    return row


def run(module: TaskModule, saved: DictConfig, data: DictConfig, cfg: DictConfig) -> dict:
    """`python eval.py mode=length eval_lengths=[...]`: one row per length."""
    if module.task_name not in LANGUAGE_MODELS:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: mode=length needs a language model")
    if "source" not in data:
        raise ConfigError(f"mode=length reads validation text; data={data._target_} has none")
    lengths = list(cfg.eval_lengths)
    if not lengths or any(not isinstance(n, int) or n < 4 for n in lengths):
        raise ConfigError(f"eval_lengths={lengths}: give even integers >= 4, e.g. [64,128,256]")
    validation = instantiate(data.source).load()["validation"]
    stream = token_stream(validation.texts, module.tokenizer).ids  # (N,)
    module.eval()
    rows = [length_row(module, stream, n, cfg.length) for n in lengths]
    table = markdown_table(rows)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "length.md").write_text(table + "\n")
    log.info(table)
    log.info(f"trained block_size={saved.data.get('block_size')}")
    return {"mode": "length", "rows": rows, "trained_block_size": saved.data.get("block_size")}
