"""DDP + bf16 on every visible GPU: prints tokens/s and model FLOPs utilisation (MFU).

    python bench/gpu_check.py                      # all GPUs, trainer=ddp, 60 steps
    python bench/gpu_check.py --steps 200 model.d_model=512 model.n_layers=8 data.batch_size=32
    python bench/gpu_check.py --cpu                # same code path on 2 CPU ranks (gloo), no MFU

Exits 0 with a one-line notice where no CUDA GPU is visible (unless --cpu). Lightning re-runs this
script once per extra GPU (its `ddp` launcher); only rank 0 prints. MFU counts 6 FLOPs per
parameter per token plus attention (12 * layers * d_model * block_size per token, as in the PaLM
paper) against the chip's dense peak for the run's precision, from Lightning's table; where the
chip is missing there (MFU prints n/a), pass --peak-tflops (e.g. 989 for H100/H200 SXM bf16).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.fabric.utilities.throughput import get_available_flops  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402

from lm_lab.build import build_module  # noqa: E402
from lm_lab.cli.resolvers import register_resolvers  # noqa: E402
from lm_lab.encoders.transformer import TransformerBlock  # noqa: E402
from lm_lab.fit import build_datamodule  # noqa: E402

WARMUP_STEPS = 10  # excluded from the timing: compilation, allocator and NCCL warm-up
COMPUTE_DTYPE = {
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
}


class StepTimer(L.Callback):
    """Wall time of the optimizer steps after warm-up, synchronised with the GPU."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.steps = 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if trainer.global_step == WARMUP_STEPS:
            self.started = time.perf_counter()
        elif self.started is not None:
            self.steps = trainer.global_step - WARMUP_STEPS
            self.seconds = time.perf_counter() - self.started


def flops_per_token(module: torch.nn.Module, block_size: int) -> float:
    n_params = sum(p.numel() for p in module.parameters())
    blocks = [m for m in module.modules() if isinstance(m, TransformerBlock)]
    d_model = module.backbone.d_model
    return 6 * n_params + 12 * len(blocks) * d_model * block_size


@rank_zero_only
def report(trainer: L.Trainer, timer: StepTimer, cfg, per_token: float, peak_tflops: float | None):
    if timer.steps < 1:
        print(f"gpu_check: too few steps to time (warm-up is {WARMUP_STEPS}); raise --steps")
        return
    tokens = timer.steps * cfg.data.batch_size * cfg.data.block_size * trainer.world_size
    tokens_per_s = tokens / timer.seconds
    device = trainer.strategy.root_device
    dtype = COMPUTE_DTYPE.get(trainer.precision, torch.float32)
    peak = get_available_flops(device, dtype) if device.type == "cuda" else None
    peak = peak or (peak_tflops * 1e12 if peak_tflops else None)
    total_peak = peak * trainer.world_size if peak else None
    mfu = f"{100 * tokens_per_s * per_token / total_peak:.1f}%" if total_peak else "n/a"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"gpu_check: {trainer.world_size} x {name}, precision={trainer.precision}, "
        f"{timer.steps} steps timed: {tokens_per_s:,.0f} tokens/s, "
        f"{tokens_per_s / trainer.world_size:,.0f} per device, MFU {mfu} "
        f"({per_token / 1e6:.1f} MFLOPs/token)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps, 10 of them warm-up")
    parser.add_argument("--cpu", action="store_true", help="trainer=ddp_sim: check the code path")
    parser.add_argument("--peak-tflops", type=float, help="per-device peak when Lightning lacks it")
    args, overrides = parser.parse_known_args()
    if not args.cpu and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU visible; nothing to measure (use --cpu to check the code path)"
        )
        return
    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [*default_overrides(args), *overrides])
    L.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.tokenizer, datamodule.label_names)
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False)
    trainer.fit(module, datamodule=datamodule)
    report(trainer, timer, cfg, flops_per_token(module, cfg.data.block_size), args.peak_tflops)


def default_overrides(args: argparse.Namespace) -> list[str]:
    """A GPT-small-like LM on the built-in corpus, steps only: no validation, no files kept."""
    sized = ["model.d_model=768", "model.n_layers=12", "model.n_heads=12", "data.batch_size=16"]
    if args.cpu:
        sized = ["model.d_model=64", "model.n_layers=2", "data.batch_size=4"]
    return [
        "trainer=ddp_sim" if args.cpu else "trainer=ddp",
        "task=generate",
        "tokenizer=byte",
        "data.block_size=256",
        "data.train_windows_per_epoch=65536",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={args.steps}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "+trainer.enable_checkpointing=false",
        "+trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"paths.output_dir={tempfile.gettempdir()}/lm_lab_gpu_check",
        *sized,
    ]


if __name__ == "__main__":
    main()
