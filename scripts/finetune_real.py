"""Fine-tune a real pretrained LLM (SmolLM2-135M-Instruct by default) with every strategy, beside
the same architecture from random init, the from-scratch recipe and TF-IDF + LR; one table.

    python scripts/finetune_real.py [--data sst2 ag_news] [--steps 150] [--batch 8] [--seeds 0 1 2]
        [--rows full lora ...] [--lrs 1e-4 3e-4] [--model smollm2] [--set KEY=VALUE ...]

Protocol (docs/results.md): per row and data set, each lr of its grid (GRIDS, or --lrs) trains
seed 0 with test=false; the lr with the best validation accuracy is kept (a grid of one skips
this); the final configuration then runs once per --seeds and its test accuracy is read once:
seed 0's grid run is not trained again, its best.ckpt is tested (eval.py's run), the other
seeds train with test=true. <out>/tried.md lists every grid run with its validation accuracy only;
<out>/table.md gives mean +- std over the seeds. Each run leaves <out>/<run>/row.json and a
finished run is never rerun, so the same command continues an interrupted table.
Runs go through scripts/finetune_compare.py's job/row/markdown (its experiment's trainer
settings: max_steps, one validation at the end), one at a time in this process.
"""

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from finetune_compare import COMMON, ROOT, job, markdown, row
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from lm_lab import evaluate
from lm_lab.cli.resolvers import register_resolvers
from lm_lab.fit import build_datamodule
from lm_lab.hf.configure import use_pretrained

LORA_ATTENTION = "finetune.targets=[attn.q,attn.k,attn.v,attn.o]"  # <= 1% of SmolLM2's weights
ROWS = {  # row -> overrides of its runs (init_from and lr are added per run)
    "full": ["finetune=full"],
    "lora": ["finetune=lora", LORA_ATTENTION],
    "ia3": ["finetune=ia3"],
    "bitfit": ["finetune=bitfit"],
    "prompt": ["finetune=prompt"],
    "head": ["finetune=head"],
    "random": ["finetune=full"],  # the pretrained architecture, random weights, same budget
}
# lr grids, small on purpose (each point is one run of the budget): full fine-tuning wants a
# small step, strategies that freeze the backbone a larger one
GRIDS = {
    "full": [3e-5, 1e-4],
    "lora": [3e-4, 1e-3],
    "ia3": [1e-3, 3e-3],
    "bitfit": [1e-3, 3e-3],
    "prompt": [1e-3, 3e-3],
    "head": [1e-3, 3e-3],
    "random": [3e-4, 1e-3],
}
RECIPES = {"sst2": "sst2_classify", "ag_news": "ag_news_classify"}  # from-scratch, results.md
EXTRA = ["scratch", "tfidf"]


def summary(values: list[float]) -> str:
    """mean +- std (sample std; a single value has none)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def cached_run(out: Path, name: str, labels: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """<out>/<name>/row.json if that run finished, else the run (via finetune_compare.job)."""
    path = out / name / "row.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = job(out, name, **kwargs)
    done = row(result, **labels) | {"peak_rss_mb": result["peak_rss_mb"]}
    path.write_text(json.dumps(done))
    return done


def tfidf_scores(model: str, data: str, overrides: list[str]) -> dict[str, float]:
    """TF-IDF + LR (conf/task/baseline) on the very examples the model rows read (their
    tokenizer decides which texts survive), C chosen on validation."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        args = ["task=classify", f"data={data}", f"init_from={model}", *overrides]
        cfg = compose("train", args, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    use_pretrained(cfg)
    datamodule = build_datamodule(cfg, hf_init=True)
    splits = (datamodule.texts_and_labels(s) for s in ("train", "validation", "test"))
    return instantiate(cfg.task.baseline).fit_score(*splits)


def tested(out: Path, name: str, grid_run: str) -> dict[str, Any]:
    """<out>/<name>/row.json: the grid run <grid_run> (its training: validation, time, memory)
    with its best.ckpt tested once by eval.py's run into <out>/<name>."""
    path = out / name / "row.json"
    if not path.is_file():
        ckpt = out / grid_run / "checkpoints" / "best.ckpt"
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("eval", [f"ckpt_path={ckpt}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out / name)
            del cfg["hydra"]
        test_acc = evaluate.run(cfg)["metrics"]["test/acc"]
        trained = json.loads((out / grid_run / "row.json").read_text())
        path.write_text(json.dumps(trained | {"test_acc": round(test_acc, 4)}))
    return json.loads(path.read_text())


def write_tables(out: Path, final: list[dict[str, Any]], tried: list[dict[str, Any]]) -> None:
    """<out>/table.md (the final runs) and <out>/tried.md (the grid, validation only), as far
    as each has rows yet."""
    if final:
        (out / "table.md").write_text(markdown(final))
    if tried:
        (out / "tried.md").write_text(markdown(tried))


def forget_weights(cfg: DictConfig) -> None:
    """The named model's architecture and tokenizer, none of its weights: the random row."""
    use_pretrained(cfg)
    with open_dict(cfg):
        cfg.init_from = None


class Table:
    """The runs of one invocation: grid, finals, and the two tables they make."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, args.out
        self.final: list[dict[str, Any]] = []
        self.tried: list[dict[str, Any]] = []
        budget = f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"
        self.budget = [*budget, f"data.batch_size={args.batch}"]

    def overrides(self, data: str, name: str, lr: float, seed: int, test: bool) -> list[str]:
        # random: composed with init_from (forget_weights keeps its model and tokenizer), with
        # the attention and pooling the pretrained rows get by default
        task = ["task.causal=true", "task.pooling=last"] if name == "random" else []
        return [
            "task=classify",
            f"data={data}",
            f"init_from={self.args.model}",
            *task,
            *ROWS[name],
            *self.budget,
            f"task.optimizer.lr={lr}",
            f"seed={seed}",
            f"test={str(test).lower()}",
        ]

    def train(self, data: str, name: str, lr: float, seed: int, test: bool) -> dict[str, Any]:
        run_name = f"{data}_{name}_lr{lr:g}_seed{seed}{'_final' if test else ''}"
        labels = {"data": data, "row": name, "lr": lr, "seed": seed}
        edit = forget_weights if name == "random" else None
        args = self.overrides(data, name, lr, seed, test)
        return cached_run(self.out, run_name, labels, overrides=args, edit=edit)

    def chosen(self, data: str, name: str, lr: float, seed: int, gridded: bool) -> dict[str, Any]:
        """The chosen configuration at `seed`, tested once; a grid run of it is tested from
        its best.ckpt rather than trained a second time."""
        if not (gridded and seed == 0):
            return self.train(data, name, lr, seed, test=True)
        grid_run = f"{data}_{name}_lr{lr:g}_seed0"
        return tested(self.out, f"{grid_run}_final", grid_run)

    def strategy(self, data: str, name: str) -> None:
        """Grid on validation (seed 0, no test), then the chosen lr once per seed with test."""
        grid = self.args.lrs or GRIDS[name]
        gridded = len(grid) > 1
        if gridded:
            val = {lr: self.train(data, name, lr, 0, test=False)["val_acc"] for lr in grid}
            self.tried += [
                {"data": data, "row": name, "lr": lr, "val_acc": v} for lr, v in val.items()
            ]
            self.write()
            grid = [max(grid, key=lambda lr: val[lr])]  # ties: the first listed
        runs = [self.chosen(data, name, grid[0], s, gridded) for s in self.args.seeds]
        share = runs[0]["trainable_%"]
        print(
            f"{data} {name}: {share}% of the parameters train"
            + (" (over the 1% LoRA aims at)" if name == "lora" and share > 1 else "")
        )
        self.add(data, name, f"{grid[0]:g}", runs)

    def scratch(self, data: str) -> None:
        """The data set's from-scratch recipe as docs/results.md trains it, its own lr."""
        runs = [
            cached_run(
                self.out,
                f"{data}_scratch_seed{s}_final",
                {"data": data, "row": "scratch", "seed": s},
                overrides=[f"seed={s}", "test=true"],
                experiment=RECIPES[data],
            )
            for s in self.args.seeds
        ]
        self.add(data, f"scratch ({RECIPES[data]})", "recipe", runs)

    def tfidf(self, data: str) -> None:
        """TF-IDF + LR on the same splits (C chosen on validation; no seed to vary)."""
        path = self.out / f"{data}_tfidf.json"
        if not path.is_file():
            started = time.perf_counter()
            scores = tfidf_scores(self.args.model, data, self.args.set)
            scores["wall_s"] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(scores))
        scores = json.loads(path.read_text())
        self.final.append(
            {
                "data": data,
                "row": "TF-IDF + LR",
                "lr": "-",
                "steps x batch": "-",
                "minutes": round(scores["wall_s"] / 60, 1),
                "trainable_%": "-",
                "peak_rss_mb": "-",
                "val_acc": f"{scores['val/baseline_acc']:.4f}",
                "test_acc": f"{scores['test/baseline_acc']:.4f}",
                "seeds": "-",
            }
        )
        self.write()

    def add(self, data: str, name: str, lr: str, runs: list[dict[str, Any]]) -> None:
        steps = "recipe" if lr == "recipe" else f"{self.args.steps} x {self.args.batch}"
        self.final.append(
            {
                "data": data,
                "row": name,
                "lr": lr,
                "steps x batch": steps,
                "minutes": round(statistics.mean(r["wall_s"] for r in runs) / 60, 1),
                "trainable_%": runs[0]["trainable_%"],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "val_acc": summary([r["val_acc"] for r in runs]),
                "test_acc": summary([r["test_acc"] for r in runs]),
                "seeds": len(runs),
            }
        )
        self.write()

    def write(self) -> None:
        write_tables(self.out, self.final, self.tried)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="init_from: a name, HF folder or GGUF")
    parser.add_argument("--data", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--rows", nargs="+", default=[*ROWS, *EXTRA], choices=[*ROWS, *EXTRA])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=8, help="sentences per step")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--lrs", nargs="+", type=float, help="one lr grid for every row")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides for every run")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "finetune_real" / "latest")
    args = parser.parse_args()
    register_resolvers()
    args.out.mkdir(parents=True, exist_ok=True)
    # every run: no TF-IDF fit beside it (its own row), the text lengths SmolLM2 reads whole
    COMMON.extend(["task.baseline=null", "data.max_length=128", *args.set])
    table, started = Table(args), time.perf_counter()
    for data in args.data:
        for name in args.rows:
            if name in ROWS:
                table.strategy(data, name)
            else:
                getattr(table, name)(data)
    print(markdown(table.final))
    print(f"{time.perf_counter() - started:.0f} s; table: {args.out}/table.md")


if __name__ == "__main__":
    main()
