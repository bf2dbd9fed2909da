"""Before and after instruction tuning on data=pydoc_sft: SmolLM2-135M-Instruct as installed,
after LoRA SFT, after full SFT, and the same architecture from random initialization; one table.

    python scripts/sft_table.py [--steps 100] [--batch 8] [--seeds 0 1 2]
        [--rows installed lora full random] [--lrs 1e-4 3e-4] [--lr full=1e-4 ...] [--model smollm2]
        [--max-prompts 150] [--max-new-tokens 64] [--set KEY=VALUE ...]

Budget: every training run is `experiment=sft_pydoc` for --steps optimizer steps of --batch
conversations (default 100 x 8 = 800 conversations, about half an epoch of the 1,500 training
pairs), validated once at the end. Measured on one thread of a busy 2-core CPU
(docs/results.md): 24 steps x 4 conversations of at most 256 tokens took 3.4 min a LoRA run and
4.5 a full one, validation included, and a test generation of 48 answers about 1.5 min; the
default (4x the tokens a step, 4x the steps, 3x the prompts) is then roughly 20-30 min a run and
3-5 hours for the table (12 runs, 10 test generations) on one core; --steps, --seeds, --rows and
--set shrink it.

Protocol (docs/results.md): per training row, each lr of its grid (finetune_real.GRIDS, or
--lrs) trains seed 0; the lr with the lowest validation response loss (`val/loss`, taken on
the validation conversations' replies) is kept (a grid of one skips this), and the other
--seeds train with it. Test is used once per final run: `eval.py mode=sft split=test` (greedy
answers to --max-prompts test conversations) gives exact match and ROUGE-L per kind (qa,
summarize, classify). The installed model is evaluated as it is. <out>/tried.md lists the grid
with its validation loss only; <out>/table.md gives mean +- std over the seeds;
<out>/samples.md sets a few test answers of every row side by side. Each run leaves
<out>/<run>/row.json (training) or eval.json (test scores), and a finished one is never rerun,
so the same command continues an interrupted table.
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune_compare import COMMON, ROOT, composed, job, markdown
from finetune_real import GRIDS, ROWS, forget_weights, summary, write_tables

from lm_lab.cli.resolvers import register_resolvers
from lm_lab.evaluate import run as evaluate

TRAINED = ("lora", "full", "random")  # rows trained here, each with finetune_real's settings
KINDS = ("qa", "summarize", "classify")
SAMPLES_PER_KIND = 2  # test answers per kind in samples.md


def cached(path: Path, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON at `path` when that run finished, else work()'s result, written there."""
    if path.is_file():
        return json.loads(path.read_text())
    result = work()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


class Table:
    """The runs of one invocation: grid, finals, their test scores, and the tables they make."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, args.out
        self.final: list[dict[str, Any]] = []
        self.tried: list[dict[str, Any]] = []
        self.samples: dict[str, list[dict[str, Any]]] = {}  # row -> seed 0's test samples
        budget = f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"
        self.budget = [*budget, f"data.batch_size={args.batch}"]
        self.eval_settings = [
            "mode=sft",
            "split=test",
            f"sft.max_prompts={args.max_prompts}",
            f"sft.max_new_tokens={args.max_new_tokens}",
            "extras.print_config=false",
        ]

    def train(self, name: str, lr: float, seed: int) -> dict[str, Any]:
        run = f"{name}_lr{lr:g}_seed{seed}"
        overrides = [f"init_from={self.args.model}", *ROWS[name], *self.budget]
        overrides += [f"task.optimizer.lr={lr}", f"seed={seed}", "test=false"]
        edit = forget_weights if name == "random" else None

        def work() -> dict[str, Any]:
            result = job(self.out, run, overrides, experiment="sft_pydoc", edit=edit)
            return {
                "run": run,
                "val_loss": round(result["metrics"]["val/loss"], 4),
                "trainable_%": result["params"]["all"]["percent"],
                "wall_s": result["wall_time_s"],
            }

        return cached(self.out / run / "row.json", work)

    def test(self, run: str, ckpt: str, data: list[str]) -> dict[str, Any]:
        """mode=sft on the test split, once per final run; the scores and the samples."""
        out_dir = self.out / f"{run}_test"

        def work() -> dict[str, Any]:
            cfg = composed("eval", [f"ckpt_path={ckpt}", *data, *self.eval_settings], out_dir)
            scores = evaluate(cfg)["scores"]
            lines = (out_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
            return {"scores": scores, "samples": [json.loads(line) for line in lines]}

        return cached(out_dir / "eval.json", work)

    def installed(self) -> None:
        """The model as installed: no training, its chat template, the same test prompts."""
        data = ["data=pydoc_sft", *(o for o in self.args.set if o.startswith("data."))]
        done = self.test("installed", self.args.model, data)
        self.samples["installed"] = done["samples"]
        self.add("installed", "-", "-", [], [done])

    def trained(self, name: str) -> None:
        """Grid on validation (seed 0), then the chosen lr for every seed, each tested once."""
        grid = [self.args.lr[name]] if name in self.args.lr else self.args.lrs or GRIDS[name]
        if len(grid) > 1:
            val = {lr: self.train(name, lr, 0)["val_loss"] for lr in grid}
            self.tried += [{"row": name, "lr": lr, "val_loss": v} for lr, v in val.items()]
            self.write()
            grid = [min(grid, key=lambda lr: val[lr])]  # ties: the first listed
        runs = [self.train(name, grid[0], seed) for seed in self.args.seeds]
        tests = [
            self.test(r["run"], str(self.out / r["run"] / "checkpoints" / "best.ckpt"), [])
            for r in runs
        ]
        self.samples[name] = tests[0]["samples"]
        self.add(name, f"{grid[0]:g}", f"{self.args.steps} x {self.args.batch}", runs, tests)

    def add(
        self,
        name: str,
        lr: str,
        steps: str,
        runs: list[dict[str, Any]],
        scores: list[dict[str, Any]],
    ) -> None:
        line: dict[str, Any] = {"row": name, "lr": lr, "steps x batch": steps}
        line["minutes"] = round(statistics.mean(r["wall_s"] for r in runs) / 60, 1) if runs else "-"
        line["trainable_%"] = runs[0]["trainable_%"] if runs else "-"
        line["val_loss"] = summary([r["val_loss"] for r in runs]) if runs else "-"
        for kind in (*KINDS, "overall"):
            per_seed = [s["scores"][kind] for s in scores if kind in s["scores"]]
            for metric, label in (("exact_match", "EM"), ("rouge_l", "ROUGE-L")):
                values = [s[metric] for s in per_seed]
                line[f"{kind} {label}"] = summary(values) if values else "-"
        line["test ppl"] = summary([s["scores"]["overall"]["response_ppl"] for s in scores])
        line["seeds"] = len(runs) or "-"
        self.final.append(line)
        self.write()

    def write(self) -> None:
        write_tables(self.out, self.final, self.tried)
        if self.samples:
            (self.out / "samples.md").write_text(side_by_side(self.samples))


def side_by_side(samples: dict[str, list[dict[str, Any]]]) -> str:
    """The first test conversations of each kind: the question, the reference, every row's
    answer (seed 0). Every row answered the same prompts, in the same order (sft.seed)."""
    first = next(iter(samples.values()))
    shown: dict[str, int] = {}
    blocks = []
    for i, sample in enumerate(first):
        if shown.get(sample["kind"], 0) >= SAMPLES_PER_KIND:
            continue
        shown[sample["kind"]] = shown.get(sample["kind"], 0) + 1
        lines = [f"### {sample['kind']}", "", "```text", sample["prompt"].strip()[:600], "```", ""]
        lines.append(f"- **reference**: {sample['reference']}")
        lines += [
            f"- **{row}**: {answers[i]['response'] or '(empty)'}"
            for row, answers in samples.items()
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rows = ["installed", *TRAINED]
    parser.add_argument("--model", default="smollm2", help="init_from: a name, HF folder or GGUF")
    parser.add_argument("--rows", nargs="+", default=rows, choices=rows)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=8, help="conversations per step")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--lrs", nargs="+", type=float, help="one lr grid for every row")
    parser.add_argument(
        "--lr", nargs="*", default=[], metavar="ROW=LR", help="a row's lr, fixed: no grid"
    )
    parser.add_argument("--max-prompts", type=int, default=150, help="test conversations answered")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per answer at most")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides for every run")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "sft_table" / "latest")
    args = parser.parse_args()
    args.lr = {row: float(lr) for row, lr in (item.split("=", 1) for item in args.lr)}
    register_resolvers()
    args.out.mkdir(parents=True, exist_ok=True)
    COMMON.extend(args.set)  # every training run, after the experiment's own values
    table, started = Table(args), time.perf_counter()
    for name in args.rows:
        if name == "installed":
            table.installed()
        else:
            table.trained(name)
    print(markdown(table.final))
    print(f"{time.perf_counter() - started:.0f} s; table: {args.out}/table.md")


if __name__ == "__main__":
    main()
