"""The sweep checks of lightning-hydra-template, as its users type them: no logger (`logger=null`,
`logger=[]`), a seed sweep under `trainer=ddp_sim` in which one job's rank 1 fails, Optuna, and
two validations an epoch. A failing rank fails its job (failed.json), not the sweep (Lightning's
observer used to SIGKILL it, exit 137, leaving the other rank waiting forever)."""

import json
import subprocess
from pathlib import Path

import pytest

from lm_lab.cli.entry import null_groups_removed
from lm_lab.train import run as train

ROOT = Path(__file__).resolve().parents[2]
FAIL_ON_RANK = '''
import lightning as L


class FailOnRank(L.Callback):
    """Planted fault: raises in on_train_start on one rank (after the process group is up)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_train_start(self, trainer, module) -> None:
        if trainer.global_rank == self.rank:
            raise RuntimeError(f"planted failure on rank {self.rank}")
'''
TINY_LM = (
    "task=generate", "data=text", "tokenizer=char", "model.n_layers=1", "model.d_model=16",
    "data.block_size=32", "data.batch_size=4", "data.train_windows_per_epoch=16",
    "data.eval_windows=8",
)  # fmt: skip


def write_text(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_text("to be or not to be, that is the question\n" * 40)
    (root / "validation.txt").write_text("whether tis nobler in the mind to suffer\n" * 10)
    return root


def test_logger_null_is_hydras_group_removal():
    conf = ROOT / "conf"
    args = ["logger=null", "callbacks=null", "seed=null", "logger=csv", "model.dropout=null"]
    assert null_groups_removed(args, conf) == [
        "~logger", "~callbacks", "seed=null", "logger=csv", "model.dropout=null",
    ]  # fmt: skip


def test_two_validations_an_epoch_without_a_logger(compose, tmp_path):
    cfg = compose(
        *TINY_LM, f"data.root={write_text(tmp_path / 'data')}", "logger=[]",
        "trainer.val_check_interval=0.5",
    )  # fmt: skip
    result = train(cfg)
    assert result["best"]["step"] in (2, 4)  # 4 batches an epoch: validated after 2 and 4
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text()) == result


@pytest.mark.slow
def test_seed_sweep_under_ddp_sim_survives_a_failing_rank(train_cli, tmp_path):
    """seed=1 plants a failure on rank 1 of job 0; seed=2 names no rank, job 1 runs (~90 s)."""
    (tmp_path / "plant").mkdir()
    (tmp_path / "plant" / "fail_on_rank.py").write_text(FAIL_ON_RANK)
    done = train_cli(
        "-m", "trainer=ddp_sim", "logger=null", "seed=1,2", *TINY_LM,
        f"data.root={write_text(tmp_path / 'data')}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "+callbacks.fail._target_=fail_on_rank.FailOnRank", "+callbacks.fail.rank=${seed}",
        env={"PYTHONPATH": f"{ROOT / 'src'}:{tmp_path / 'plant'}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads((tmp_path / "sweep" / "0" / "failed.json").read_text())
    assert failed["error"].startswith("rank 1 exited with status 1 (its error is above)"), failed
    assert "planted failure on rank 1" in done.stderr
    finished = json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())
    assert finished["metrics"]["test/loss"] > 0 and finished["best"]["metric"] == "val/loss"
    assert not (tmp_path / "sweep" / "1" / "csv").exists()  # logger=null: no logger files
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == "", "a rank outlived its job"


@pytest.mark.slow
def test_optuna_sweep_without_a_logger(train_cli, tmp_path):
    done = train_cli(
        "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "logger=[]",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trials = [json.loads((tmp_path / "sweep" / j / "metrics.json").read_text()) for j in "01"]
    assert "best_value" in (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert all(trial["best"]["metric"] == "val/acc" for trial in trials)
