"""Seconds per training step and peak RSS of fine-tuning a named pretrained model (SmolLM2 by
default) on SST-2, per strategy, with and without gradient checkpointing.

    python bench/finetune_step.py [--model smollm2] [--strategies lora full] [--steps 3]
        [--set finetune.targets=[attn.q,attn.k,attn.v,attn.o]]

Each configuration runs in its own process (ru_maxrss is a process's high-water mark): the
module train.py would build (init_from, finetune=, task=classify defaults), one warm-up step,
then `--steps` timed AdamW steps (forward, backward, optimizer) on the first training batches.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace, strategy: str, gc: bool) -> dict:
    """One configuration, in this process: seconds per step and peak RSS (MB)."""
    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    import torch.nn.functional as F
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lm_lab.build import build_module
    from lm_lab.cli.resolvers import register_resolvers
    from lm_lab.finetune.setup import prepare_finetune
    from lm_lab.fit import build_datamodule
    from lm_lab.hf.configure import use_pretrained

    torch.set_num_threads(1)
    register_resolvers()
    overrides = [
        "task=classify",
        f"data={args.data}",
        f"data.batch_size={args.batch}",
        f"init_from={args.model}",
        f"finetune={strategy}",
        f"model.gradient_checkpointing={str(gc).lower()}",
        *(args.set if strategy == "lora" else []),
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    pretrained = use_pretrained(cfg)
    datamodule = build_datamodule(cfg, hf_init=True)
    module = build_module(cfg, datamodule.tokenizer, datamodule.label_names)
    module = prepare_finetune(cfg, module, pretrained.load_into(module.backbone)).train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batches = iter(datamodule.train_dataloader())
    times, lengths = [], []
    for _ in range(args.steps + 1):
        b = next(batches)
        started = time.perf_counter()
        loss = F.cross_entropy(module(b["input_ids"], b["pad_mask"]), b["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        lengths.append(b["input_ids"].shape[1])
    total = sum(p.numel() for p in module.parameters())
    return {
        "strategy": strategy,
        "gradient_checkpointing": gc,
        "batch": args.batch,
        "seq_lengths": lengths[1:],
        "s_per_step": round(sum(times[1:]) / args.steps, 2),
        "trainable_%": round(100 * sum(p.numel() for p in params) / total, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="init_from: a name, folder or GGUF")
    parser.add_argument("--data", default="sst2")
    parser.add_argument("--strategies", nargs="+", default=["lora", "full"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--set", nargs="*", default=[], help="overrides of the lora runs")
    parser.add_argument("--one", nargs=2, metavar=("STRATEGY", "GC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = measure(args, args.one[0], args.one[1] == "1")
        print("ROW " + json.dumps(row), flush=True)
        return
    for strategy in args.strategies:
        for gc in ("0", "1"):
            cmd = [sys.executable, __file__, "--one", strategy, gc, *sys.argv[1:]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            print(next(line[4:] for line in out.splitlines() if line.startswith("ROW ")))


if __name__ == "__main__":
    main()
