"""lm_lab against transformers (+ peft) on the same Hugging Face weights, in one process.

    python bench/hf_speed.py [--ckpt smollm2] [--threads 1 2] [--repeats 3] [--quick]
    python bench/hf_speed.py --profile forward|generate|lora  # top ops, lm_lab then transformers

Both sides get the same inputs, alternating within each repeat; the median of `--repeats` wall
times counts (generation, the long measure, takes the median of `gen_repeats`). transformers
runs with eager and SDPA attention on the forward pass; the faster of the two then runs
generation (measuring both there would double a bench that must fit in ten minutes on two
cores). The models load once for every thread count; ICL scoring (two lm_lab paths, a ratio
that does not depend on threads) runs at the first thread count only. LoRA training runs each
side in a spawned child, so each child's peak RSS (`ru_maxrss`, a process high-water mark) is
its own. The logit-agreement line comes first: the speeds are of the same computation only if
the logits agree.
"""

import argparse
import json
import multiprocessing as mp
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lm_lab.build import load_module  # noqa: E402
from lm_lab.finetune.base import is_added  # noqa: E402
from lm_lab.finetune.lora import LoRA  # noqa: E402
from lm_lab.hf.folder import resolve  # noqa: E402
from lm_lab.tasks.decoding import prepare_for_decoding  # noqa: E402
from lm_lab.tasks.sampling import generate_ids  # noqa: E402

AGREE = 1e-4  # max |logit difference| for the two sides to count as the same computation
TARGETS = ["q", "k", "v", "o"]  # LoRA on every attention projection, both sides
FULL = dict(batch=8, seq=128, prompt=32, new=128, new_b8=64, icl_queries=50, train_steps=2)
FULL |= dict(gen_repeats=2)
QUICK = dict(batch=2, seq=16, prompt=8, new=8, new_b8=8, icl_queries=4, train_steps=2)
QUICK |= dict(gen_repeats=1)
PROFILED = ("forward", "generate", "lora")  # --profile choices


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_model(folder: Path, attn: str) -> torch.nn.Module:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation=attn, dtype=torch.float32
    )
    model.generation_config.eos_token_id = None  # both sides generate every requested token
    return model.eval()


def random_ids(vocab: int, batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, T) left-padded with 0 and the attention mask (B, T) transformers takes."""
    T = max(map(len, prompts))
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, T - len(p) :], mask[row, T - len(p) :] = torch.tensor(p), 1
    return ids, mask


def hf_generate(model: torch.nn.Module, prompts: list[list[int]], new: int) -> torch.Tensor:
    ids, mask = left_padded(prompts)
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=0
    )
    return out[:, ids.shape[1] :]  # (B, new)


def read_bandwidth(mb: int = 256, repeats: int = 5) -> float:
    """Bytes/s of summing an fp32 buffer far larger than the caches: each byte read once."""
    x = torch.ones(mb * 2**20 // 4)
    best = min(median_seconds(x.sum, 1) for _ in range(repeats))
    return x.numel() * 4 / best


def lora_step(side: str, folder: str, size: dict) -> tuple[Callable[[], None], int]:
    """One LoRA training step (AdamW, rank 8 on q, k, v, o, batch x seq tokens) of one side,
    warmed up (allocator, AdamW state), and the tokens it trains on."""
    torch.manual_seed(0)
    if side == "lm_lab":
        module, _ = load_module(folder)
        LoRA(rank=8, alpha=16.0, targets=[f"attn.{t}" for t in TARGETS]).apply(module)
        for name, param in module.named_parameters():  # peft trains the updates alone
            param.requires_grad_(is_added(name))
        forward = module
    else:
        import peft

        config = peft.LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[f"{t}_proj" for t in TARGETS]
        )
        module = peft.get_peft_model(hf_model(Path(folder), "sdpa"), config)
        forward = lambda ids: module(input_ids=ids).logits  # noqa: E731
    module.train()
    vocab = forward(torch.ones(1, 1, dtype=torch.long)).shape[-1]
    ids = random_ids(vocab, size["batch"], size["seq"], 3)  # (B, T)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def train_step() -> None:
        logits = forward(ids)  # (B, T, V)
        F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()

    train_step()
    return train_step, ids.numel()


def lora_child(side: str, folder: str, threads: int, size: dict, queue: mp.Queue) -> None:
    """Tokens/s of LoRA training steps and this child's peak RSS."""
    torch.set_num_threads(threads)
    train_step, tokens = lora_step(side, folder, size)
    seconds = median_seconds(train_step, size["train_steps"])
    queue.put((tokens / seconds, own_peak_rss_mb()))


def own_peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM on Linux, since `ru_maxrss` keeps the parent's figure
    across the spawn's exec (a parent holding four models would read as every child's peak)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lora_rows(folder: Path, threads: int, size: dict) -> dict:
    ctx = mp.get_context("spawn")
    result = {}
    for side in ("lm_lab", "peft"):
        queue = ctx.Queue()
        child = ctx.Process(target=lora_child, args=(side, str(folder), threads, size, queue))
        child.start()
        result[side] = queue.get()
        child.join()
    return result


def icl_rate(module, queries: int, k: int = 8) -> dict[str, float]:
    """Queries/s of SST-2 validation scoring at k demos: shared prefix vs every whole prompt."""
    sys.path.insert(0, str(ROOT / "bench"))
    from icl_prefix_cache import TEMPLATE, rows

    from lm_lab.eval import icl

    pool, texts = rows("train"), [t for t, _ in rows("validation")[:queries]]
    demos = icl.sample_demos(pool, icl.label_groups(pool, True), k, random.Random(0), set(texts))
    prompter = icl.Prompter(TEMPLATE, module.tokenizer)
    prompts = prompter.prompts(demos, texts)
    conts = [module.tokenizer.encode(prompter.continuation(x)) for x in ("negative", "positive")]
    paths = {
        "shared_prefix": icl.prefix_cached,
        "whole_prompt": lambda m, p: icl.whole_prompt(icl.lm_logits(m), p),
    }
    rates = {}
    for name, make in paths.items():
        seconds = median_seconds(
            lambda make=make: icl.label_logprobs(
                make(module, prompts.prefix), prompts.queries, conts, module.tokenizer.pad_id, 16
            ),
            1,
        )
        rates[name] = queries / seconds
    return rates


def load_both(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.nn.Module]]:
    """lm_lab's model as eval.py and training run it and as generate.py does, and transformers'
    with eager and SDPA attention, loaded once."""
    hf = {attn: hf_model(folder, attn) for attn in ("eager", "sdpa")}
    plain, prepared = (load_module(str(folder))[0] for _ in range(2))
    return plain, prepare_for_decoding(prepared), hf


def forward_rows(module, hf: dict, ids: torch.Tensor, repeats: int) -> dict:
    """Forward tokens/s of lm_lab and of transformers' eager and SDPA, alternating; the faster
    transformers attention is the one the other measures use."""
    fwd = {"lm_lab": lambda: module(ids)}
    fwd |= {f"hf_{a}": lambda m=m: m(input_ids=ids).logits for a, m in hf.items()}
    times = {name: [] for name in fwd}
    for _ in range(repeats):  # alternating
        for name, fn in fwd.items():
            times[name].append(median_seconds(fn, 1))
    secs = {name: statistics.median(t) for name, t in times.items()}
    best = min(("hf_eager", "hf_sdpa"), key=secs.get)
    rates = {n: ids.numel() / secs[n] for n in ("lm_lab", best)}
    return {"hf_attn": best.removeprefix("hf_"), "forward_tok_s": rates}


def generation_rows(module, model, best: str, vocab: int, size: dict) -> dict:
    """Greedy tokens/s of both sides, alternating, and whether they chose the same tokens."""
    sides = {
        "lm_lab": lambda p, n: generate_ids(module, p, n, temperature=0),
        best: lambda p, n: hf_generate(model, p, n),
    }
    out: dict = {}
    for key, (prompts, new) in generation_batches(vocab, size).items():
        times, tokens = {name: [] for name in sides}, {}
        for _ in range(size["gen_repeats"]):
            for name, fn in sides.items():
                start = time.perf_counter()
                tokens[name] = fn(prompts, new)  # (B, new)
                times[name].append(time.perf_counter() - start)
        count = len(prompts) * new
        out[key] = {n: count / statistics.median(t) for n, t in times.items()}
        out[key]["same_tokens"] = torch.equal(tokens["lm_lab"], tokens[best])
    return out


def measure(folder: Path, models: tuple, threads: int, repeats: int, size: dict, icl: bool) -> dict:
    """Forward and ICL on the model as eval.py and training run it (logits equal transformers');
    generation on the model as generate.py runs it (`prepare_for_decoding`: oneDNN)."""
    torch.set_num_threads(threads)
    module, prepared, hf = models
    vocab = hf["sdpa"].config.vocab_size
    ids = random_ids(vocab, size["batch"], size["seq"], 0)  # (B, T)
    out: dict = {"threads": threads}
    with torch.inference_mode():
        theirs = {a: m(input_ids=ids).logits for a, m in hf.items()}  # (B, T, V) each
        out |= agreement(module(ids), theirs)
        print(agreement_line(out, threads), flush=True)  # first: speeds of one computation
        out["decoding_logit_diff"] = (prepared(ids) - theirs["sdpa"]).abs().max().item()
        out |= forward_rows(module, hf, ids, repeats)
        out["max_abs_logit_diff"] = out["logit_diff_by_attn"][out["hf_attn"]]  # the one timed
        if icl and size["icl_queries"]:
            out["icl_k8_queries_s"] = icl_rate(module, size["icl_queries"])
        seconds = median_seconds(lambda: prepared(ids), repeats)
        out["forward_decoding_tok_s"] = ids.numel() / seconds
        best = f"hf_{out['hf_attn']}"
        out |= generation_rows(prepared, hf[out["hf_attn"]], best, vocab, size)
        print(decoding_line(out, threads), flush=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    bandwidth = read_bandwidth()
    out["read_bandwidth_gb_s"] = bandwidth / 1e9
    out["batch1_limit_tok_s"] = bandwidth / weight_bytes
    out["lm_lab_fraction_of_limit"] = out["generate_b1_tok_s"]["lm_lab"] / out["batch1_limit_tok_s"]
    out["lora_train"] = lora_rows(folder, threads, size)
    return out


def agreement(ours: torch.Tensor, theirs: dict[str, torch.Tensor]) -> dict:
    """Max |logit difference| (B, T, V) of lm_lab against each attention implementation of
    transformers, and between transformers' own two: the spread summation order alone gives."""
    return {
        "logit_diff_by_attn": {a: (ours - t).abs().max().item() for a, t in theirs.items()},
        "hf_eager_vs_sdpa": (theirs["eager"] - theirs["sdpa"]).abs().max().item(),
    }


def agreement_line(out: dict, threads: int) -> str:
    sides = ", ".join(
        f"{d:.2e} vs {attn} ({'agree' if d <= AGREE else 'DISAGREE'})"
        for attn, d in out["logit_diff_by_attn"].items()
    )
    return (
        f"logits, {threads} thread(s): max |lm_lab - transformers| = {sides}, limit {AGREE:g}; "
        f"transformers eager vs its sdpa: {out['hf_eager_vs_sdpa']:.2e}"
    )


def decoding_line(out: dict, threads: int) -> str:
    same = {k: out[k]["same_tokens"] for k in ("generate_b1_tok_s", "generate_b8_tok_s")}
    return (
        f"generate.py's kernels (oneDNN), {threads} thread(s): max |lm_lab - "
        f"transformers sdpa| = {out['decoding_logit_diff']:.2e} on the same batch; "
        f"greedy tokens equal: batch 1 {same['generate_b1_tok_s']}, batch 8 "
        f"{same['generate_b8_tok_s']}"
    )


def generation_batches(vocab: int, size: dict) -> dict[str, tuple[list[list[int]], int]]:
    """Prompts and new-token count of each generation measure: one prompt, and `batch`
    left-padded ones of unequal lengths (prompt, prompt - 2, ...)."""
    gen = random_ids(vocab, size["batch"], size["prompt"], 1)
    unequal = [gen[r, : size["prompt"] - 2 * r].tolist() for r in range(len(gen))]
    return {
        "generate_b1_tok_s": ([gen[0].tolist()], size["new"]),
        "generate_b8_tok_s": (unequal, size["new_b8"]),
    }


def profile(folder: Path, what: str, threads: int, size: dict, rows: int = 12) -> None:
    """torch.profiler's top ops by self CPU time of one run of `what`, lm_lab then transformers
    (SDPA; peft for lora), at `threads` threads."""
    from torch.profiler import profile as profiler

    torch.set_num_threads(threads)
    if what == "lora":
        runs = {side: lora_step(side, str(folder), size)[0] for side in ("lm_lab", "peft")}
    else:
        plain, prepared, hf = load_both(folder)
        module, model = plain if what == "forward" else prepared, hf["sdpa"]
        ids = random_ids(model.config.vocab_size, size["batch"], size["seq"], 0)
        if what == "forward":
            runs = {"lm_lab": lambda: module(ids), "transformers": lambda: model(input_ids=ids)}
        else:
            prompts, new = generation_batches(model.config.vocab_size, size)["generate_b1_tok_s"]
            runs = {
                "lm_lab": lambda: generate_ids(module, prompts, new, temperature=0),
                "transformers": lambda: hf_generate(model, prompts, new),
            }
    for side, run in runs.items():
        with torch.inference_mode(what != "lora"):
            run()  # warm-up
            with profiler() as prof:
                run()
        print(f"{what}, {side}, {threads} thread(s):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def table(results: list[dict]) -> str:
    lines = ["measure | threads | lm_lab | transformers | ratio | target"]
    for r in results:
        hf = f"hf_{r['hf_attn']}"
        lines.append(
            f"logits max abs diff | {r['threads']} | vs {hf}: {r['max_abs_logit_diff']:.2e} | "
            f"{hf} vs the other: {r['hf_eager_vs_sdpa']:.2e} | | <= {AGREE:g}"
        )
        a, b = r["forward_tok_s"]["lm_lab"], r["forward_tok_s"][hf]
        lines.append(
            f"forward_tok_s | {r['threads']} | {a:.1f} | {b:.1f} ({hf}) | {a / b:.2f}x | >= 1.0x"
        )
        a = r["forward_decoding_tok_s"]
        lines.append(
            f"forward_tok_s, generate.py's kernels | {r['threads']} | {a:.1f} | {b:.1f} ({hf}) | "
            f"{a / b:.2f}x | logits {r['decoding_logit_diff']:.2e} from hf_sdpa"
        )
        for key in ("generate_b1_tok_s", "generate_b8_tok_s"):
            a, b, same = r[key]["lm_lab"], r[key][hf], r[key]["same_tokens"]
            lines.append(
                f"{key} | {r['threads']} | {a:.1f} | {b:.1f} ({hf}) | {a / b:.2f}x | >= 1.2x; "
                f"same tokens: {same}"
            )
        (a, ra), (b, rb) = r["lora_train"]["lm_lab"], r["lora_train"]["peft"]
        lines.append(
            f"lora_train_tok_s | {r['threads']} | {a:.1f} | {b:.1f} (peft) | {a / b:.2f}x | >= 1.0x"
        )
        lines.append(
            f"lora_peak_rss_mb | {r['threads']} | {ra:.0f} | {rb:.0f} (peft) | "
            f"{ra / rb:.2f}x | <= 1.0x"
        )
        if "icl_k8_queries_s" in r:
            c, w = r["icl_k8_queries_s"]["shared_prefix"], r["icl_k8_queries_s"]["whole_prompt"]
            lines.append(
                f"icl_k8_queries_s | {r['threads']} | {c:.2f} shared | {w:.2f} whole | "
                f"{c / w:.2f}x | >= 4x"
            )
        lines.append(
            f"batch-1 limit | {r['threads']} | {r['read_bandwidth_gb_s']:.1f} GB/s read -> "
            f"{r['batch1_limit_tok_s']:.1f} tok/s | lm_lab "
            f"{r['lm_lab_fraction_of_limit']:.0%} | | >= 70%"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="smollm2", help="a named model or a HF folder")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes, one repeat: a smoke test"
    )
    parser.add_argument("--no-icl", action="store_true", help="skip ICL scoring (needs SST-2)")
    parser.add_argument("--out", default=str(ROOT / "logs" / "hf_speed.json"))
    parser.add_argument(
        "--profile", choices=PROFILED, help="print the top ops of one measure instead"
    )
    args = parser.parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.no_icl:
        size["icl_queries"] = 0
    repeats = 1 if args.quick else args.repeats
    folder = resolve(args.ckpt, "ckpt_path")
    if args.profile:
        profile(folder, args.profile, args.threads[0], size)
        return
    models = load_both(folder)
    results = [
        measure(folder, models, t, repeats, size, icl=i == 0) for i, t in enumerate(args.threads)
    ]
    print(table(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"size": size, "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
