"""ICL scoring with and without the shared-prefix KV cache, on a real model: seconds per cell
and the largest score difference.

    python bench/icl_prefix_cache.py [--ckpt smollm2] [--k 8] [--queries 100]
"""

import argparse
import csv
import random
import sys
import time
from pathlib import Path

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
    args = parser.parse_args()
    module, _ = load_module(args.ckpt)
    pool, queries = rows("train"), rows("validation")[: args.queries]
    texts = [t for t, _ in queries]
    demos = sample_demos(pool, label_groups(pool, True), args.k, random.Random(0), set(texts))
    prompter = Prompter(TEMPLATE, module.tokenizer)
    prompts = prompter.prompts(demos, texts)
    conts = [
        module.tokenizer.encode(prompter.continuation(lab)) for lab in ("negative", "positive")
    ]
    scores, seconds = {}, {}
    for name, make in (
        ("cached", lambda p: prefix_cached(module, p)),
        ("whole", lambda p: whole_prompt(lm_logits(module), p)),
    ):
        start = time.perf_counter()
        fn = make(prompts.prefix)
        scores[name] = label_logprobs(
            fn, prompts.queries, conts, module.tokenizer.pad_id, args.batch
        )
        seconds[name] = time.perf_counter() - start
    diff = (scores["cached"] - scores["whole"]).abs().max().item()
    print(
        f"k={args.k} queries={len(texts)} prefix={len(prompts.prefix)} tokens: "
        f"cached {seconds['cached']:.1f} s, whole {seconds['whole']:.1f} s, "
        f"speed-up {seconds['whole'] / seconds['cached']:.1f}x, max |diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
