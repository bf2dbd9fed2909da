"""`run(cfg)` behind generate.py: sample text from a checkpoint, which alone gives model and
tokenizer. Streams a single sample to the terminal; writes every sample to samples.jsonl."""

import json
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lm_lab.build import load_module
from lm_lab.cli.config import apply_extras
from lm_lab.data.tokenizers import Tokenizer
from lm_lab.tasks.language_model import LanguageModel
from lm_lab.tasks.sampling import generate_text
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)


def unescape(text: str) -> str:
    """A command line cannot easily hold a newline: `\\n` and `\\t` stand for newline and tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def read_prompts(cfg: DictConfig) -> list[str]:
    """`prompt`, or one prompt per non-empty line of `prompt_file`; each `num_samples` times."""
    if cfg.prompt_file:
        path = Path(cfg.prompt_file)
        if not path.is_file():
            raise ConfigError(
                f"prompt_file={path}: no such file; give a text file, one prompt a line"
            )
        prompts = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        if not prompts:
            raise ConfigError(f"prompt_file={path}: has no non-empty line")
    else:
        prompts = [unescape(str(cfg.prompt))]
    if not isinstance(cfg.num_samples, int) or cfg.num_samples < 1:
        raise ConfigError(f"num_samples={cfg.num_samples}: must be an integer >= 1")
    return [prompt for prompt in prompts for _ in range(cfg.num_samples)]


def unknown_chars(tokenizer: Tokenizer, prompts: list[str]) -> list[int]:
    """Characters of each prompt the tokenizer never saw in training: they become UNK, which
    the model cannot read, so the log counts them (and samples.jsonl keeps the count)."""
    counts = [tokenizer.count_unknown(tokenizer.encode(prompt)) for prompt in prompts]
    distinct = dict(zip(prompts, counts, strict=True))  # each prompt once, not num_samples times
    if any(counts):
        log.warning(
            f"prompt: {sum(distinct.values())} character(s) unknown to the checkpoint's "
            f"tokenizer became UNK, in {sum(map(bool, distinct.values()))} of "
            f"{len(distinct)} prompt(s)"
        )
    return counts


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Generates for every prompt; returns and writes {"samples", "tokens_per_s", ...}."""
    apply_extras(cfg)
    module, _ = load_module(cfg.ckpt_path)
    if not isinstance(module, LanguageModel):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: a {module.task_name} checkpoint cannot generate text; "
            "use one trained with task=generate"
        )
    module.to(pick_device(cfg.device))
    prompts = read_prompts(cfg)
    unknown = unknown_chars(module.tokenizer, prompts)
    stream = cfg.stream and len(prompts) == 1
    if stream:
        print(prompts[0], end="", flush=True)
    started = time.perf_counter()
    completions = generate_text(
        module,
        module.tokenizer,
        prompts,
        cfg.max_new_tokens,
        stop=unescape(cfg.stop) if cfg.stop else None,
        on_text=(lambda _, text: print(text, end="", flush=True)) if stream else None,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        seed=cfg.seed,
        use_cache=cfg.use_cache,
    )
    seconds = time.perf_counter() - started
    samples = [
        {"prompt": p, "completion": c, "unknown_chars": n}
        for p, c, n in zip(prompts, completions, unknown, strict=True)
    ]
    if stream:
        print()
    else:
        for i, sample in enumerate(samples):
            print(f"--- sample {i}\n{sample['prompt']}{sample['completion']}")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples)
    n_tokens = sum(len(module.tokenizer.encode(c)) for c in completions)
    print(f"{n_tokens} tokens in {seconds:.2f} s; samples in {out_dir}/samples.jsonl")
    return {"samples": samples, "tokens_per_s": n_tokens / seconds, "run_dir": str(out_dir)}
