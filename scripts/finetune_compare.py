"""Pretrain once per encoder, fine-tune with every strategy, and write one comparison table.

    python scripts/finetune_compare.py [--steps 800] [--pretrain-steps 2000] [--set KEY=VALUE ...]

Runs in one process (Hydra's compose API, `experiment=finetune_compare` under every job):
1. per encoder, `task=generate data=sst2` on the unlabelled SST-2 training text;
2. per encoder x strategy, `task=classify init_from=<that LM>`;
3. per encoder, `finetune=full` from random init (does transfer help?);
4. a label budget curve (data.max_train_examples) for the first encoder, pretrained vs random.
Each run writes <out>/<run>/row.json; <out>/results.json and <out>/table.md (strategy, encoder,
init, budget, trainable %, val and test acc, wall time) are rebuilt from every row there, so runs
for different encoders may share one --out from parallel processes. An LM already in
<out>/lm_<encoder>/ is reused.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from lm_lab.cli.resolvers import register_resolvers  # noqa: E402
from lm_lab.train import run  # noqa: E402

STRATEGIES = ["full", "head", "partial", "lora", "adapter", "bitfit", "prompt", "ia3"]
ENCODERS = {  # encoder -> size overrides shared by its LM and its classifiers
    "transformer": ["model.n_layers=2"],
    # one direction, as pretrained: a backward LSTM would start random and no strategy but
    # full could train it
    "bilstm": ["model.n_layers=2", "model.bidirectional=false"],
    "hybrid": ["model.pattern=LA", "model.bidirectional=false"],
}
# per-strategy settings, measured on SST-2 at d_model 64 (README): strategies that freeze the
# backbone want a 5x larger lr than full fine-tuning, and LoRA gains most on the word vectors
TUNED_LR = "task.optimizer.lr=5e-3"
STRATEGY_SETTINGS = {
    "head": [TUNED_LR],
    "lora": [
        TUNED_LR,
        "finetune.rank=4",
        "finetune.targets=[attn.q,attn.v,embed,weight_ih,weight_hh]",
    ],
    "adapter": [TUNED_LR],
    "bitfit": [TUNED_LR],
    "prompt": [TUNED_LR],
    "ia3": [TUNED_LR],
}
ORDER = {"encoder": list(ENCODERS), "strategy": STRATEGIES, "init": ["pretrained", "random"]}
COMMON = ["callbacks.progress_bar=null", "extras.print_config=false"]


def job(
    out: Path,
    name: str,
    overrides: list[str],
    experiment: str = "finetune_compare",
    edit: Callable[[DictConfig], None] | None = None,
) -> dict[str, Any]:
    """One train.run under `experiment`, its run dir <out>/<name>; `edit` may change the
    composed config in place before the run (scripts/finetune_real.py's random-init rows)."""
    overrides = [f"experiment={experiment}", *COMMON, *overrides]
    return run(composed("train", overrides, out / name, edit))


def composed(
    config: str,
    overrides: list[str],
    output_dir: Path,
    edit: Callable[[DictConfig], None] | None = None,
) -> DictConfig:
    """conf/<config>.yaml with the overrides, as its entry script would see it, writing to
    `output_dir`; `edit` changes it in place last."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config, overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
        if edit is not None:
            edit(cfg)
    return cfg


def pretrain(out: Path, enc: str, steps: int) -> Path:
    """The encoder's LM checkpoint: the one already in <out>/lm_<enc>/, else a fresh run."""
    lm = out / f"lm_{enc}" / "checkpoints" / "best.ckpt"
    if lm.is_file():
        print(f"reusing {lm}")
        return lm
    lm_steps = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"]
    job(out, f"lm_{enc}", [f"model={enc}", *ENCODERS[enc], "task=generate", *lm_steps])
    return lm


def row(result: dict[str, Any], **labels: Any) -> dict[str, Any]:
    metrics = result["metrics"]
    return labels | {
        "trainable_%": result["params"]["all"]["percent"],
        "val_acc": round(metrics.get("val/acc", float("nan")), 4),
        "test_acc": round(metrics.get("test/acc", float("nan")), 4),
        "wall_s": result["wall_time_s"],
    }


def collect(out: Path) -> list[dict[str, Any]]:
    """Every run's row under `out`, in table order: encoder, label budget, init, strategy."""
    rows = [json.loads(p.read_text()) for p in out.glob("*/row.json")]

    def key(r: dict[str, Any]) -> tuple:
        budget = r["budget"] if isinstance(r["budget"], int) else 1 << 30
        rank = {k: ORDER[k].index(r[k]) for k in ORDER}
        return rank["encoder"], -budget, rank["init"], rank["strategy"]

    return sorted(rows, key=key)


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of rows that share their keys (the first row's give the columns)."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="fine-tuning steps per run")
    parser.add_argument("--pretrain-steps", type=int, default=2000, help="LM steps per encoder")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--budgets", nargs="*", type=int, default=[500, 2000])
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides for every job")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "finetune_compare" / "latest")
    args = parser.parse_args()
    register_resolvers()
    COMMON.extend(args.set)  # every job below sees them, after the experiment's own values
    steps = [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]

    def classify(name: str, enc: str, strategy: str, lm: Path | None, budget: int | None) -> None:
        overrides = [
            f"model={enc}",
            *ENCODERS[enc],
            "task=classify",
            # the same attention and pooling for pretrained and random rows (the decoder default
            # would make only the pretrained ones causal); the tables in results.md used these
            "task.causal=false",
            "task.pooling=mean",
            f"finetune={strategy}",
            f"init_from={lm}" if lm else "init_from=null",
            f"data.max_train_examples={budget}" if budget else "data.max_train_examples=null",
            *steps,
            *STRATEGY_SETTINGS.get(strategy, []),
        ]
        result = job(args.out, name, overrides)
        init = "pretrained" if lm else "random"
        labels = {"strategy": strategy, "encoder": enc, "init": init, "budget": budget or "all"}
        (args.out / name / "row.json").write_text(json.dumps(row(result, **labels)))
        rows = collect(args.out)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
        (args.out / "table.md").write_text(markdown(rows))

    started = time.perf_counter()
    for enc in args.encoders:
        lm = pretrain(args.out, enc, args.pretrain_steps)
        for strategy in args.strategies:
            classify(f"{enc}_{strategy}", enc, strategy, lm, None)
        classify(f"{enc}_full_random", enc, "full", None, None)
        if enc == args.encoders[0]:
            for budget in args.budgets:
                classify(f"{enc}_full_{budget}", enc, "full", lm, budget)
                classify(f"{enc}_full_{budget}_random", enc, "full", None, budget)
    rows = collect(args.out)
    print(markdown(rows))
    print(f"{len(rows)} runs in {time.perf_counter() - started:.0f} s; table: {args.out}/table.md")


if __name__ == "__main__":
    main()
