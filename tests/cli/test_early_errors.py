"""A bad value is answered before Lightning loads: train.py, eval.py and generate.py print their
one line and exit 2 with neither Lightning nor torchmetrics imported (~2 s a command instead of
~8 s). Each command runs as a user types it, in a process that reports at exit which of them
it imported, so imports made while running (Hydra's `_target_`s) count as well as static ones
(those the early-path contract in pyproject.toml pins)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lm_lab.cli.run_lock import LOCK_FILE

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("lightning", "pytorch_lightning", "torchmetrics")
# runs a script as `python <script> args...` does, then prints the heavy modules it imported
PROBE = (
    "import atexit, runpy, sys\n"
    f"atexit.register(lambda: print('imported:', *(m for m in {HEAVY!r} if m in sys.modules)))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def probe(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "HYDRA_FULL_ERROR")}
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / script), *args, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [  # task.monitor: once checked by importing the task class, which no import contract sees
        ("train.py", ["task.monitor=val/bpc"], "task.monitor=val/bpc: task=classify never logs"),
        ("train.py", ["ckpt_path={garbage}"], "not a readable checkpoint (the file is empty)"),
        ("train.py", [], "is writing there; give this run its own hydra.run.dir"),
        ("eval.py", ["split=bogus", "ckpt_path=x"], "split='bogus' is not one of"),
        ("eval.py", ["ckpt_path={missing}"], "missing.ckpt: no such file"),
        ("generate.py", ["temperature=-1", "ckpt_path=x"], "temperature=-1: must be a finite"),
        ("generate.py", ["ckpt_path={garbage}"], "not a readable checkpoint (the file is empty)"),
    ],
    ids=lambda value: value if isinstance(value, str) and value.endswith(".py") else None,
)
def test_a_bad_value_is_one_line_before_lightning_loads(tmp_path, script, args, message):
    """Every run dir is busy (a live process holds its lock): train.py's checks come first."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).write_text(f"{socket.gethostname()} {os.getpid()}")
    (tmp_path / "garbage.ckpt").write_bytes(b"")
    paths = {"garbage": tmp_path / "garbage.ckpt", "missing": tmp_path / "missing.ckpt"}
    done = probe(script, *(arg.format(**paths) for arg in args), cwd=tmp_path)
    err = done.stderr.strip()
    assert done.returncode == 2, err[-2000:]
    assert "\n" not in err and err.startswith("error: ") and message in err, err[-2000:]
    assert done.stdout.splitlines()[-1] == "imported:", done.stdout[-2000:]
