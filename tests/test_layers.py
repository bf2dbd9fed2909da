"""The layering of docs/architecture.md holds: no module imports from a layer above its own; and
the commands' early path (their checks) imports no Lightning.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks every import,
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
    assert "3 kept, 0 broken" in result.stdout


def planted(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package with `line` appended to `module` (a path)."""
    shutil.copytree(ROOT / "src" / "lm_lab", tmp_path / "lm_lab")
    victim = tmp_path / "lm_lab" / module
    victim.write_text(victim.read_text() + f"\n{line}  # noqa\n")
    return lint(tmp_path)


def test_a_planted_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    result = planted(tmp_path, "encoders/base.py", "from lm_lab.build import build_module")
    assert result.returncode != 0
    assert "lm_lab.encoders.base -> lm_lab.build" in result.stdout


def test_the_check_that_loaded_lightning_breaks_the_early_path(tmp_path: Path) -> None:
    """How validate_config loaded Lightning for every bad value (~6 s): the data counts' check
    imported from the datamodule."""
    result = planted(
        tmp_path, "cli/validate.py", "from lm_lab.data.loaders.datamodule import check_counts"
    )
    assert result.returncode != 0
    assert "lm_lab.cli.validate -> lm_lab.data.loaders.datamodule" in result.stdout


def test_a_source_that_imports_a_tokenizer_breaks_the_data_contract(tmp_path: Path) -> None:
    """data/'s sub-packages: sources read text and know no tokenizer (nor loaders above)."""
    result = planted(tmp_path, "data/sources/split.py", "from lm_lab.data.tokenization import chat")
    assert result.returncode != 0
    assert "lm_lab.data.sources.split -> lm_lab.data.tokenization.chat" in result.stdout


def test_a_task_reaching_up_to_build_breaks_the_contract(tmp_path: Path) -> None:
    """The circle load_from_checkpoint once hid behind import_module is now a visible import."""
    result = planted(tmp_path, "tasks/base.py", "from lm_lab.build import load_module")
    assert result.returncode != 0
    assert "lm_lab.tasks.base -> lm_lab.build" in result.stdout
