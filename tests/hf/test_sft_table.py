"""scripts/sft_table.py (make sft) as a user runs it, on a tiny random Llama folder and a few
pydoc_sft conversations: the installed row, lr chosen on validation loss, every seed tested
once, the table and the samples side by side."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.source.train_size=12",
    "data.source.validation_size=3",
    "data.source.test_size=6",
    "data.max_length=96",
    "data.truncation=cut",
    "trainer.accelerator=cpu",
]


def test_tiny_sft_table(hf_dirs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "sft_table.py"), "--model", str(hf_dirs["llama"])]
    cmd += ["--rows", "installed", "lora", "random", "--steps", "2", "--batch", "2"]
    cmd += ["--seeds", "0", "1", "--lrs", "1e-3", "3e-3", "--lr", "random=3e-3"]
    cmd += ["--max-prompts", "6"]
    cmd += ["--max-new-tokens", "4", "--out", str(out), "--set", *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/row.json")}
    # lora: the grid's lowest validation loss picks the lr the other seed trains; random: its
    # --lr, fixed, so no grid
    best = {"lora": min([1e-3, 3e-3], key=lambda lr: rows[f"lora_lr{lr:g}_seed0"]["val_loss"])}
    best["random"] = 3e-3
    grid = {f"lora_lr{lr:g}_seed0" for lr in (0.001, 0.003)}
    finals = [f"{r}_lr{best[r]:g}_seed{s}" for r in ("lora", "random") for s in (0, 1)]
    assert set(rows) == grid | set(finals)
    tested = sorted(p.parent.name for p in out.glob("*/eval.json"))
    assert tested == sorted(["installed_test", *(f"{f}_test" for f in finals)])  # test once each
    scores = json.loads((out / "installed_test" / "eval.json").read_text())["scores"]
    assert set(scores) == {"qa", "summarize", "classify", "overall"}
    assert scores["overall"]["n"] == 6
    table = (out / "table.md").read_text()
    assert "| qa EM | qa ROUGE-L | summarize EM |" in table
    lora = next(line for line in table.splitlines() if line.startswith("| lora |"))
    assert "2 x 2" in lora and " ± " in lora and lora.endswith("| 2 |")
    assert "| installed | - | - |" in table and "| random |" in table
    tried = (out / "tried.md").read_text()
    assert "test" not in tried and tried.count("| lora |") == 2 and "random" not in tried
    samples = (out / "samples.md").read_text()
    assert samples.count("**reference**") == 6  # 2 per kind
    assert samples.count("**installed**") == samples.count("**random**") == 6
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # all cached
    assert again.returncode == 0 and (out / "table.md").read_text() == table
