"""The layering of docs/architecture.md holds: no module imports from a layer above its own.

The contract lives in pyproject.toml ([tool.importlinter]); `lint-imports` checks every import,
function-level ones included, so a lazy import cannot hide a cycle."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(src: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_no_module_imports_a_higher_layer() -> None:
    result = lint(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_a_planted_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "lm_lab", tmp_path / "lm_lab")
    victim = tmp_path / "lm_lab" / "encoders" / "base.py"
    victim.write_text(victim.read_text() + "\nfrom lm_lab.build import build_module  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "lm_lab.encoders.base -> lm_lab.build" in result.stdout
