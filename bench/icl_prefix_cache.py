"""ICL scoring with and without the shared-prefix KV cache, on a real model: seconds per cell
and the largest score difference.

    python bench/icl_prefix_cache.py [--ckpt smollm2] [--k 8] [--queries 100] [--repeats 3]

Each path runs `--repeats` times, alternating, and the fastest run counts: the first call of a
path pays allocator warm-up, which would favour whichever path ran second. Times are the
process's CPU seconds on `--threads` threads (1 by default), which other jobs on a shared
machine disturb far less than wall-clock seconds.
"""

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lm_lab.build import load_module  # noqa: E402
from lm_lab.eval.icl import (  # noqa: E402
    Prompter,
    PromptTemplate,
    label_groups,
    label_logprobs,
    lm_logits,
    prefix_cached,
    sample_demos,
    whole_prompt,
)

SST2 = ROOT.parent / "shared" / "data" / "sst2"
TEMPLATE = PromptTemplate(
    demo="Review: {text}\nSentiment: {label}",
    verbalizers={"negative": "negative", "positive": "positive"},
)


def rows(split: str) -> list[tuple[str, str]]:
    with open(SST2 / f"{split}.csv", encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="smollm2")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module, _ = load_module(args.ckpt)
    pool, queries = rows("train"), rows("validation")[: args.queries]
    texts = [t for t, _ in queries]
    demos = sample_demos(pool, label_groups(pool, True), args.k, random.Random(0), set(texts))
    prompter = Prompter(TEMPLATE, module.tokenizer)
    prompts = prompter.prompts(demos, texts)
    conts = [
        module.tokenizer.encode(prompter.continuation(lab)) for lab in ("negative", "positive")
    ]
    scores, seconds = {}, {"cached": float("inf"), "whole": float("inf")}
    paths = {
        "cached": lambda p: prefix_cached(module, p),
        "whole": lambda p: whole_prompt(lm_logits(module), p),
    }
    for _ in range(args.repeats):
        for name, make in paths.items():
            start = time.process_time()
            fn = make(prompts.prefix)  # the cached path encodes the prefix here: timed
            scores[name] = label_logprobs(
                fn, prompts.queries, conts, module.tokenizer.pad_id, args.batch
            )
            seconds[name] = min(seconds[name], time.process_time() - start)
    diff = (scores["cached"] - scores["whole"]).abs().max().item()
    print(
        f"k={args.k} queries={len(texts)} prefix={len(prompts.prefix)} tokens: "
        f"CPU s, best of {args.repeats}, {args.threads} thread(s): "
        f"cached {seconds['cached']:.1f}, whole {seconds['whole']:.1f}, "
        f"speed-up {seconds['whole'] / seconds['cached']:.1f}x, max |diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
