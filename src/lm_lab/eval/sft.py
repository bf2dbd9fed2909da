"""`python eval.py mode=sft`: answer each held-out conversation and score the answers.

For every conversation of the split (a fixed random subset of `sft.max_prompts`), the prompt is
everything before its last assistant turn, rendered as the model reads a conversation
(`encode_prompt`: its chat template, else the plain template), and the reference is that turn.
Responses are greedy, batched with left padding and the KV cache (`generate_completions`),
and end at the tokenizer's first end-of-sequence id (or the plain template's end text, for a
tokenizer without one). Each conversation is also scored under
teacher forcing: the loss on the reference response's targets (`encode_conversation`), which
gives a response perplexity that does not depend on what the model chose to generate.
Writes metrics.json (by kind and overall), sft.md and samples.jsonl in the run dir.
"""

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from lm_lab.data.sources.conversations import Conversation
from lm_lab.data.tokenization.conversation import IGNORE, encode_conversation, encode_prompt
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.eval.sft_scores import Scored, by_kind
from lm_lab.tasks.decoding import prepare_for_decoding
from lm_lab.tasks.metrics import LANGUAGE_MODELS
from lm_lab.tasks.sampling import generate_completions, is_count
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger
from lm_lab.utils.markdown import markdown_table

if TYPE_CHECKING:  # a LightningModule: eval.py checks sft.* with this module before it loads
    from lm_lab.tasks.language_model import LanguageModel

log = get_logger(__name__)

SAMPLES_FILE, TABLE_FILE = "samples.jsonl", "sft.md"


def check_settings(cfg: DictConfig) -> None:
    """The sft block's values, before any checkpoint or data loads."""
    sft = cfg.sft
    for key in ("max_new_tokens", "batch_size"):
        if not is_count(sft[key]) or sft[key] < 1:
            raise ConfigError(f"sft.{key}={sft[key]}: must be an integer >= 1")
    if sft.max_prompts is not None and (not is_count(sft.max_prompts) or sft.max_prompts < 1):
        raise ConfigError(f"sft.max_prompts={sft.max_prompts}: must be an integer >= 1, or null")


def check_module(module: Any, cfg: DictConfig) -> "LanguageModel":
    if module.task_name not in LANGUAGE_MODELS:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: a {module.task_name} checkpoint cannot answer; "
            f"mode=sft needs a language model ({' or '.join(f'task={t}' for t in LANGUAGE_MODELS)})"
        )
    return module


def template_of(module: "LanguageModel", cfg: DictConfig) -> Any:
    """None when the tokenizer has a chat template (it wins); else a task=sft checkpoint's own
    plain template, else `sft.template` (a task=generate model never saw one)."""
    if module.tokenizer.chat_template is not None:
        return None
    return getattr(module, "template", None) or instantiate(cfg.sft.template)


def held_out(data: DictConfig, cfg: DictConfig) -> list[Conversation]:
    """The split's conversations that end with an assistant turn, a fixed random subset of
    sft.max_prompts of them (`sft.seed`); test falls back to validation where a source has none."""
    source = instantiate(data.source)
    if not callable(getattr(source, "load_conversations", None)):
        raise ConfigError(
            f"data.source={data.source._target_}: not an SFT source (it has no "
            "load_conversations); use data=pydoc_sft, sst2_sft, ag_news_sft or a conversation file"
        )
    splits = source.load_conversations()
    split = cfg.split if cfg.split in splits else "validation"
    if split != cfg.split:
        log.info(f"mode=sft: the data has no {cfg.split} split; scoring validation")
    pool = [c for c in splits[split] if c.messages and c.messages[-1]["role"] == "assistant"]
    if not pool:
        raise ConfigError(f"{data.source._target_}: no {split} conversation ends with an answer")
    random.Random(cfg.sft.seed).shuffle(pool)
    return pool[: cfg.sft.max_prompts]


def responses(
    model: "LanguageModel",
    prompts: list[list[int]],
    stop: str | None,
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Greedy answers, cut at the first EOS id or at `stop` (the plain template's end text, for
    a tokenizer without EOS); prompts batched by length, so rows pad little."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [prompts[i] for i in rows]
        done = generate_completions(
            model, model.tokenizer, batch, max_new_tokens, stop=stop, temperature=0.0
        )
        for row, completion in zip(rows, done, strict=True):
            out[row] = completion.text.strip()
    return out


@torch.no_grad()
def response_losses(
    model: "LanguageModel", encoded: list[tuple[list[int], list[int]]], batch_size: int
) -> list[tuple[float, int]]:
    """(summed loss, scored tokens) of each (ids, targets) pair under teacher forcing. Targets
    are not shifted (targets[t] is ids[t] or -100), so position t - 1 predicts target t; only
    the scored positions are projected onto the vocabulary."""
    device = model.backbone.embed.weight.device
    pad_id = model.tokenizer.pad_id
    out = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        T = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), T), pad_id, dtype=torch.long)  # (B, T), right-padded
        targets = torch.full((len(batch), T), IGNORE, dtype=torch.long)  # (B, T)
        for row, (seq, tgt) in enumerate(batch):
            ids[row, : len(seq)], targets[row, : len(tgt)] = torch.tensor(seq), torch.tensor(tgt)
        ids, targets = ids[:, :-1].to(device), targets[:, 1:].to(device)  # (B, T - 1) each
        h = model.backbone(ids, None, causal=True)  # (B, T - 1, D); right pads come after
        scored = targets != IGNORE  # (B, T - 1)
        logits = model.head(h[scored]).float()  # (N, V)
        loss = F.cross_entropy(logits, targets[scored], reduction="none")  # (N,)
        rows = scored.nonzero()[:, 0]  # (N,) the row of each scored token
        sums = torch.zeros(len(batch), device=device).index_add_(0, rows, loss)  # (B,)
        out += list(zip(sums.tolist(), scored.sum(1).tolist(), strict=True))
    return out


def score(
    model: "LanguageModel", conversations: list[Conversation], template: Any, sft: DictConfig
) -> tuple[list[Scored], list[str]]:
    """Every conversation answered and scored; also the prompts as text, for reading."""
    tokenizer: Tokenizer = model.tokenizer
    prompts = [encode_prompt(tokenizer, c.messages[:-1], template) for c in conversations]
    stop = None if template is None else template.stop(tokenizer)
    answers = responses(model, prompts, stop, sft.max_new_tokens, sft.batch_size)
    encoded = [encode_conversation(tokenizer, c.messages, template) for c in conversations]
    losses = response_losses(model, encoded, sft.batch_size)
    rows = [
        Scored.of(c.kind or "all", c.messages[-1]["content"], answer, nll, n)
        for c, answer, (nll, n) in zip(conversations, answers, losses, strict=True)
    ]
    return rows, [tokenizer.decode(p) for p in prompts]


def write_outputs(out_dir: Path, rows: list[Scored], prompts: list[str], table: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TABLE_FILE).write_text(table + "\n")
    with (out_dir / SAMPLES_FILE).open("w", encoding="utf-8") as f:
        for row, prompt in zip(rows, prompts, strict=True):
            sample = {"kind": row.kind, "prompt": prompt, "reference": row.reference}
            sample |= {"response": row.response, "exact_match": row.exact_match}
            f.write(json.dumps(sample | {"rouge_l": row.rouge_l}, ensure_ascii=False) + "\n")


def run(module: Any, saved: DictConfig, data: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """`python eval.py mode=sft ...`: the scores by kind, also as sft.md and samples.jsonl."""
    model = prepare_for_decoding(check_module(module, cfg).eval())  # it only generates
    template = template_of(model, cfg)
    conversations = held_out(data, cfg)
    rows, prompts = score(model, conversations, template, cfg.sft)
    scores = by_kind(rows)
    table = markdown_table([{"kind": kind} | values for kind, values in scores.items()])
    write_outputs(Path(cfg.paths.output_dir), rows, prompts, table)
    log.info(f"mode=sft on {len(rows)} {cfg.split} conversations:\n{table}")
    return {
        "mode": "sft",
        "scores": scores,
        "split": cfg.split,
        "data": data.source._target_,
        "ckpt_path": str(cfg.ckpt_path),
        "template": "chat" if template is None else type(template).__name__,
    }
