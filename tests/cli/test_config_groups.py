"""conf/train.yaml tells the user which options each group has: those lists must stay true, and an
experiment's per-encoder shape must exist for the chosen encoder."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
LISTED_GROUPS = ("model", "task", "data", "tokenizer", "trainer", "finetune", "debug", "shape")


def listed_options(group: str) -> set[str]:
    """The `a | b | c` chain in the comment of the group's defaults line."""
    lines = (CONF / "train.yaml").read_text().splitlines()
    line = next(ln for ln in lines if ln.startswith(f"  - {group}:"))
    comment = line.split("#", 1)[1]
    chains = re.findall(r"[\w.-]+(?:\s*\|\s*[\w.-]+)+", comment)
    return {word.strip() for chain in chains for word in chain.split("|")}


@pytest.mark.parametrize("group", LISTED_GROUPS)
def test_train_yaml_lists_every_option_of_a_group(group: str) -> None:
    options = {p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")}
    assert listed_options(group) == options


def test_every_recall_shape_covers_the_three_encoders() -> None:
    for shape in (CONF / "shape").glob("*.yaml"):
        if shape.stem != "none":
            files = {p.stem for p in (CONF / "model_shape" / shape.stem).glob("*.yaml")}
            assert {"transformer", "bilstm", "hybrid"} <= files, shape.stem


def test_a_shape_without_a_file_for_the_encoder_fails_in_one_line(tmp_path: Path) -> None:
    """Hydra's optional entry would silently train baby_gpt's own shape under experiment=mqar."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=mqar", "model=baby_gpt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no conf/model_shape/recall/baby_gpt.yaml for model=baby_gpt" in result.stderr
    assert "Traceback" not in result.stderr


def test_task_configs_share_the_base_block() -> None:
    base = yaml.safe_load((CONF / "task" / "_base.yaml").read_text())
    for task in ("classify", "generate"):
        own = yaml.safe_load((CONF / "task" / f"{task}.yaml").read_text())
        assert own["defaults"][0] == "_base"
        assert "fused" not in own.get("optimizer", {}) and "compile" not in own
    assert set(base) == {"optimizer", "scheduler", "compile"}
