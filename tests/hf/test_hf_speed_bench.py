"""`python bench/hf_speed.py --quick` runs end to end on a tiny llama folder: the logit-agreement
line first, then generate.py's kernels (oneDNN) against the same logits and tokens, then the
table, and the JSON it writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~60 s with the session's HF folders and two spawned LoRA children
def test_quick_bench_prints_agreement_first_and_writes_json(hf_dirs, tmp_path):
    out = tmp_path / "hf_speed.json"
    args = ["--quick", "--threads", "1", "--no-icl", "--out", str(out)]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "hf_speed.py"),
            "--ckpt",
            str(hf_dirs["llama"]),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("logits, 1 thread(s): max |lm_lab - transformers|")
    assert "vs sdpa (agree)" in lines[0] and "vs eager (agree)" in lines[0]
    assert lines[1].startswith("generate.py's kernels (oneDNN), 1 thread(s)")
    assert lines[1].endswith("greedy tokens equal: batch 1 True, batch 8 True")
    assert lines[2].startswith("measure | threads | lm_lab | transformers")
    (row,) = json.loads(out.read_text())["results"]
    assert row["max_abs_logit_diff"] <= 1e-4
    assert row["max_abs_logit_diff"] == row["logit_diff_by_attn"][row["hf_attn"]]
    assert set(row["lora_train"]) == {"lm_lab", "peft"}
    assert row["generate_b8_tok_s"]["lm_lab"] > 0 and row["generate_b8_tok_s"]["same_tokens"]
    assert row["decoding_logit_diff"] <= 1e-4  # a tiny model: oneDNN's order moves little
