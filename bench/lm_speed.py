"""lm_lab against a hand-written PyTorch loop, in one process, on experiment=shakespeare_char:
training tokens/s (same model, data and batches), GFLOP/s against this CPU's matmul peak,
generation tokens/s with and without a KV cache, and with --full the val loss and wall time of
2000 iterations. Prints a markdown table and writes it to --out (default logs/bench/<stamp>.md).

    python bench/lm_speed.py [--full] [--threads N] [--rounds 3] [--steps 60] [hydra overrides]
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from plain import plain_eval, plain_generate, plain_train  # noqa: E402

from lm_lab.build import build_module  # noqa: E402
from lm_lab.cli.resolvers import register_resolvers  # noqa: E402
from lm_lab.fit import build_datamodule, build_trainer  # noqa: E402
from lm_lab.tasks.language_model import LanguageModel  # noqa: E402
from lm_lab.tasks.sampling import generate_ids  # noqa: E402

CONTEXT, NEW_TOKENS = 512, 256  # generation: prompt length and tokens sampled


class StepClock(L.Callback):
    """Time between consecutive training-step ends: everything one step costs, data included."""

    def __init__(self, marks: list[float]) -> None:
        self.marks = marks

    def on_train_batch_end(self, *args: object) -> None:
        self.marks.append(time.perf_counter())


def step_seconds(marks: list[float]) -> list[float]:
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best fp32 GFLOP/s of an n x n matmul: the ceiling a training step can approach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def train_flops_per_token(model: LanguageModel, cfg: DictConfig) -> float:
    """nanoGPT's estimate: 6 per parameter (forward + backward) plus attention's 12 L D T."""
    n_params = sum(p.numel() for p in model.parameters())
    attention = 12 * cfg.model.n_layers * cfg.model.d_model * cfg.data.block_size
    return 6 * n_params + attention


def lightning_steps(cfg: DictConfig, model: LanguageModel, datamodule, steps: int) -> list[float]:
    """lm_lab's Trainer path (progress bar, logger, lr monitor), validation and checkpoints off."""
    marks: list[float] = []
    cfg = copy.deepcopy(cfg)
    cfg.trainer.max_steps = steps
    trainer = build_trainer(cfg)
    trainer.callbacks.append(StepClock(marks))
    trainer.fit(model, datamodule=datamodule)
    return step_seconds(marks)


def plain_steps(cfg: DictConfig, model: LanguageModel, datamodule, steps: int) -> list[float]:
    marks: list[float] = []
    loader = datamodule.train_dataloader()
    plain_train(
        model, loader, steps, cfg.trainer.max_steps, lambda: marks.append(time.perf_counter())
    )
    return step_seconds(marks)


def throughput(cfg: DictConfig, datamodule, rounds: int, steps: int) -> dict[str, float]:
    """Alternate plain and lm_lab rounds so both see the same machine load; median step time."""
    L.seed_everything(cfg.seed)
    start = build_module(cfg, datamodule.tokenizer, None)
    times: dict[str, list[float]] = {"plain": [], "lm_lab": []}
    for _ in range(rounds):
        times["plain"] += plain_steps(cfg, copy.deepcopy(start), datamodule, steps)
        times["lm_lab"] += lightning_steps(cfg, copy.deepcopy(start), datamodule, steps)
    tokens = cfg.data.batch_size * cfg.data.block_size
    return {name: tokens / statistics.median(t) for name, t in times.items()}


def generation(model: LanguageModel, prompt: torch.Tensor, rounds: int) -> dict[str, float]:
    """New tokens/s for one CONTEXT-token prompt; the median of `rounds` runs each."""
    model.eval()
    ids = [prompt[0].tolist()]
    runs = {
        "lm_lab cached": lambda: generate_ids(model, ids, NEW_TOKENS, seed=0),
        "lm_lab recomputed": lambda: generate_ids(model, ids, NEW_TOKENS, seed=0, use_cache=False),
        "plain cached": lambda: plain_generate(model, prompt, NEW_TOKENS, 1.0, seed=0),
    }
    greedy = generate_ids(model, ids, 32, temperature=0)
    assert torch.equal(greedy, plain_generate(model, prompt, 32, 0, seed=0)), "loops disagree"
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved, so a change in machine load hits every loop alike
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: NEW_TOKENS / statistics.median(s) for name, s in seconds.items()}


def full_runs(cfg: DictConfig, datamodule, out_dir: Path, overrides: list[str]) -> dict[str, float]:
    """2000 iterations of the plain loop (timed, then val loss on the same windows) and the whole
    `python train.py experiment=shakespeare_char` process (timed, val loss from metrics.json)."""
    L.seed_everything(cfg.seed)
    model = build_module(cfg, datamodule.tokenizer, None)
    started = time.perf_counter()
    plain_train(model, datamodule.train_dataloader(), cfg.trainer.max_steps, cfg.trainer.max_steps)
    plain_s = time.perf_counter() - started
    plain_loss = plain_eval(model, datamodule.val_dataloader())
    run_dir = out_dir / "train_run"
    command = [sys.executable, str(ROOT / "train.py"), "experiment=shakespeare_char", *overrides]
    started = time.perf_counter()
    subprocess.run([*command, f"hydra.run.dir={run_dir}"], check=True, capture_output=True)
    lm_lab_s = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return {
        "plain_s": plain_s,
        "plain_loss": plain_loss,
        "lm_lab_s": lm_lab_s,
        "lm_lab_loss": metrics["val/loss"],
    }


def row(name: str, plain: str, lm_lab: str, ratio: str) -> str:
    return f"| {name} | {plain} | {lm_lab} | {ratio} |"


def table(results: dict, flops_per_token: float, peak: float) -> list[str]:
    """The markdown rows: one measure per row, plain loop beside lm_lab."""
    tp, gen = results["throughput"], results["generation"]
    gflops = {name: tokens_per_s * flops_per_token / 1e9 for name, tokens_per_s in tp.items()}
    cached, plain_cached = gen["lm_lab cached"], gen["plain cached"]
    rows = [
        row("measure", "plain PyTorch", "lm_lab", "lm_lab / plain"),
        row("---", "---", "---", "---"),
        row("train tokens/s (median step)", f"{tp['plain']:.0f}", f"{tp['lm_lab']:.0f}",
            f"{tp['lm_lab'] / tp['plain']:.2f}"),
        row(f"train GFLOP/s (fp32 matmul peak {peak:.0f})",
            f"{gflops['plain']:.0f} ({gflops['plain'] / peak:.0%})",
            f"{gflops['lm_lab']:.0f} ({gflops['lm_lab'] / peak:.0%})", ""),
        row(f"generate tokens/s, KV cache ({NEW_TOKENS} new, context {CONTEXT})",
            f"{plain_cached:.0f}", f"{cached:.0f}", f"{cached / plain_cached:.2f}"),
        row("generate tokens/s, recomputed", "", f"{gen['lm_lab recomputed']:.0f}",
            f"cache: {cached / gen['lm_lab recomputed']:.1f}x faster"),
    ]  # fmt: skip
    if "full" in results:
        full = results["full"]
        rows += [
            row(f"val loss after {results['iters']} iters", f"{full['plain_loss']:.3f}",
                f"{full['lm_lab_loss']:.3f}", f"{full['lm_lab_loss'] - full['plain_loss']:+.3f}"),
            row("wall s: plain loop / whole train.py process", f"{full['plain_s']:.0f}",
                f"{full['lm_lab_s']:.0f}", f"{full['lm_lab_s'] / full['plain_s']:.2f}"),
        ]  # fmt: skip
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add 2000-iteration runs (minutes)")
    parser.add_argument("--threads", type=int, help="torch threads; default: torch's choice")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per measure")
    parser.add_argument("--steps", type=int, default=60, help="training steps per round")
    parser.add_argument("--out", type=Path, help="markdown file; default logs/bench/<stamp>.md")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.root=DIR")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the train.py process too
    out_dir = ROOT / "logs" / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")
    register_resolvers()
    quiet = [
        f"paths.output_dir={out_dir}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
        "callbacks.model_checkpoint=null",
        "+trainer.enable_checkpointing=false",
        "extras.print_config=false",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["experiment=shakespeare_char", *args.overrides, *quiet])
    datamodule = build_datamodule(cfg)
    peak = matmul_peak_gflops()
    results: dict = {"throughput": throughput(cfg, datamodule, args.rounds, args.steps)}
    model = build_module(cfg, datamodule.tokenizer, None)
    first = datamodule.train_dataloader().dataset.shards.arrays[0][:CONTEXT]
    prompt = torch.from_numpy(first.astype("int64"))[None]  # (1, CONTEXT)
    results["generation"] = generation(model, prompt, args.rounds)
    if args.full:
        results["full"] = full_runs(cfg, datamodule, out_dir, args.overrides)
        results["iters"] = cfg.trainer.max_steps
    header = (
        f"lm_lab benchmark {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s): `{' '.join(['python', *sys.argv])}`"
    )
    text = "\n".join([header, "", *table(results, train_flops_per_token(model, cfg), peak)])
    out = args.out or out_dir.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"\n{text}\n\nwritten to {out}")


if __name__ == "__main__":
    main()
