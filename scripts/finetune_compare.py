"""Pretrain once per encoder, fine-tune with every strategy, and write one comparison table.

    python scripts/finetune_compare.py [--steps 300] [--pretrain-steps 600] [--set KEY=VALUE ...]

Runs in one process (Hydra's compose API, `experiment=finetune_compare` under every job):
1. per encoder, `task=generate data=sst2` on the unlabelled SST-2 training text;
2. per encoder x strategy, `task=classify init_from=<that LM>`;
3. per encoder, `finetune=full` from random init (does transfer help?);
4. a label budget curve (data.max_train_examples) for the first encoder, pretrained vs random.
Writes <out>/results.json and <out>/table.md (strategy, encoder, init, budget, trainable %, val
and test acc, wall time).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from lm_lab.train import run  # noqa: E402
from lm_lab.utils.resolvers import register_resolvers  # noqa: E402

STRATEGIES = ["full", "head", "partial", "lora", "adapter", "bitfit", "prompt", "ia3"]
ENCODERS = {  # encoder -> size overrides shared by its LM and its classifiers
    "transformer": ["model.n_layers=2"],
    "bilstm": ["model.n_layers=2"],
    "hybrid": ["model.pattern=LA"],
}
COMMON = ["callbacks.progress_bar=null", "extras.print_config=false"]


def job(out: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    """One train.run under experiment=finetune_compare, its run dir <out>/<name>."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", ["experiment=finetune_compare", *COMMON, *overrides], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / name)
        del cfg["hydra"]
    return run(cfg)


def row(result: dict[str, Any], **labels: Any) -> dict[str, Any]:
    metrics = result["metrics"]
    return labels | {
        "trainable_%": result["params"]["all"]["percent"],
        "val_acc": round(metrics.get("val/acc", float("nan")), 4),
        "test_acc": round(metrics.get("test/acc", float("nan")), 4),
        "wall_s": result["wall_time_s"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps per run")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="LM steps per encoder")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--budgets", nargs="*", type=int, default=[500, 2000])
    parser.add_argument("--lora-rank", type=int, default=4, help="finetune.rank for lora")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides for every job")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "finetune_compare" / "latest")
    args = parser.parse_args()
    register_resolvers()
    COMMON.extend(args.set)  # every job below sees them, after the experiment's own values
    steps = [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
    rows: list[dict[str, Any]] = []

    def classify(name: str, enc: str, strategy: str, lm: Path | None, budget: int | None) -> None:
        extra = [f"finetune.rank={args.lora_rank}"] if strategy == "lora" else []
        overrides = [
            f"model={enc}",
            *ENCODERS[enc],
            "task=classify",
            f"finetune={strategy}",
            f"init_from={lm}" if lm else "init_from=null",
            f"data.max_train_examples={budget}" if budget else "data.max_train_examples=null",
            *steps,
            *extra,
        ]
        result = job(args.out, name, overrides)
        init = "pretrained" if lm else "random"
        rows.append(row(result, strategy=strategy, encoder=enc, init=init, budget=budget or "all"))
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
        (args.out / "table.md").write_text(markdown(rows))

    started = time.perf_counter()
    for enc in args.encoders:
        lm_steps = [f"trainer.max_steps={args.pretrain_steps}"]
        lm_steps.append(f"trainer.val_check_interval={args.pretrain_steps}")
        job(args.out, f"lm_{enc}", [f"model={enc}", *ENCODERS[enc], "task=generate", *lm_steps])
        lm = args.out / f"lm_{enc}" / "checkpoints" / "best.ckpt"
        for strategy in args.strategies:
            classify(f"{enc}_{strategy}", enc, strategy, lm, None)
        classify(f"{enc}_full_random", enc, "full", None, None)
        if enc == args.encoders[0]:
            for budget in args.budgets:
                classify(f"{enc}_full_{budget}", enc, "full", lm, budget)
                classify(f"{enc}_full_{budget}_random", enc, "full", None, budget)
    print(markdown(rows))
    print(f"{len(rows)} runs in {time.perf_counter() - started:.0f} s; table: {args.out}/table.md")


if __name__ == "__main__":
    main()
