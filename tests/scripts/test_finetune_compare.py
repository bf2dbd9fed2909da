"""scripts/finetune_compare.py end to end on a tiny SST-2-shaped CSV: the table, and LM reuse."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def compare():
    spec = importlib.util.spec_from_file_location(
        "finetune_compare", ROOT / "scripts" / "finetune_compare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(compare, monkeypatch, out: Path, data: Path, strategies: list[str]) -> list[dict]:
    tiny = [f"data.root={data}", "model.d_model=16", "data.batch_size=8", "test=false"]
    argv = ["--steps", "2", "--pretrain-steps", "2", "--encoders", "hybrid", "--budgets"]
    argv += ["--strategies", *strategies, "--out", str(out), "--set", *tiny]
    monkeypatch.setattr(sys, "argv", ["finetune_compare.py", *argv])
    compare.main()
    return json.loads((out / "results.json").read_text())


def test_pretrains_once_fine_tunes_each_strategy_and_writes_the_table(
    compare, sst2_like, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    rows = run(compare, monkeypatch, out, sst2_like, ["full", "lora"])
    assert [(r["strategy"], r["init"]) for r in rows] == [
        ("full", "pretrained"),
        ("lora", "pretrained"),
        ("full", "random"),
    ]
    assert rows[0]["trainable_%"] == 100.0 and 0 < rows[1]["trainable_%"] < 100.0
    assert (out / "table.md").read_text().count("| hybrid |") == 3
    lm = out / "lm_hybrid" / "checkpoints" / "best.ckpt"
    stamp = lm.stat().st_mtime_ns
    rows = run(compare, monkeypatch, out, sst2_like, ["head"])  # adds its row, reuses the LM
    assert [r["strategy"] for r in rows] == ["full", "head", "lora", "full"]
    assert lm.stat().st_mtime_ns == stamp
