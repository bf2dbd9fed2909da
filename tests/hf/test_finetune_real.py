"""scripts/finetune_real.py (make finetune-real) as a user runs it, on a tiny random Llama folder
and an SST-2-shaped CSV: lr chosen on validation, test once per final run, the table."""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def saved(out: Path, run: str) -> dict:
    """A finished run's row.json."""
    return json.loads((out / run / "row.json").read_text())


def backbone_without_added(run_dir: Path) -> int:
    """The run's backbone parameters, less what its strategy added (LoRA's A and B)."""
    params = json.loads((run_dir / "metrics.json").read_text())["params"]
    return params["backbone"] - params.get("added", {}).get("total", 0)


def test_tiny_table_with_grid_seeds_random_and_tfidf(hf_dirs, sst2_like, tmp_path):
    out = tmp_path / "out"
    tiny = [f"data.root={sst2_like}", "trainer.accelerator=cpu"]
    cmd = [sys.executable, str(ROOT / "scripts" / "finetune_real.py"), "--model"]
    cmd += [str(hf_dirs["llama"]), "--data", "sst2", "--rows", "lora", "random", "tfidf"]
    cmd += ["--steps", "2", "--batch", "4", "--seeds", "0", "1", "--lrs", "1e-3", "3e-3"]
    cmd += ["--out", str(out), "--set", *tiny]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.parent.name for p in out.glob("*/row.json"))
    best = {  # per row: the grid's best validation lr is the one trained per seed with test
        r: max([1e-3, 3e-3], key=lambda lr: saved(out, f"sst2_{r}_lr{lr:g}_seed0")["val_acc"])
        for r in ("lora", "random")
    }
    finals = [f"sst2_{r}_lr{best[r]:g}_seed{s}_final" for r in ("lora", "random") for s in (0, 1)]
    grid = [f"sst2_{r}_lr{lr:g}_seed0" for r in ("lora", "random") for lr in (0.001, 0.003)]
    assert runs == sorted(finals + grid)
    for name in grid:  # validation only: no test figure exists for a configuration not chosen
        assert math.isnan(saved(out, name)["test_acc"])
    # random: the folder's architecture (same backbone size) without its weights; lora froze
    # the folder's word vectors, which random init never had
    folder = load_file(hf_dirs["llama"] / "model.safetensors")["model.embed_tokens.weight"]
    sizes = {backbone_without_added(out / r) for r in [*grid, finals[1], finals[3]]}
    assert len(sizes) == 1
    for r in ("lora", "random"):  # seed 0's final is its grid run tested, not trained again
        first, grid_run = (
            saved(out, finals[0 if r == "lora" else 2]),
            f"sst2_{r}_lr{best[r]:g}_seed0",
        )
        assert first["val_acc"] == saved(out, grid_run)["val_acc"] and 0 <= first["test_acc"] <= 1
        assert not (out / f"{grid_run}_final" / "checkpoints").exists()
    for run, pretrained in ((finals[1], True), (finals[3], False)):
        ckpt = torch.load(out / run / "checkpoints" / "best.ckpt", weights_only=True)
        assert torch.equal(ckpt["state_dict"]["backbone.embed.weight"], folder) == pretrained
    table = (out / "table.md").read_text()
    lora = next(line for line in table.splitlines() if "| lora |" in line)
    assert "2 x 4" in lora and " ± " in lora and "| 2 |" in lora
    assert "TF-IDF + LR" in table and "| random |" in table
    tried = (out / "tried.md").read_text()
    assert "test" not in tried and tried.count("| sst2 |") == 4
    assert "lora" in done.stdout and "table:" in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # all cached
    assert again.returncode == 0 and (out / "table.md").read_text() == table
