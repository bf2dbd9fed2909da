"""`trainer=ddp_sim` (2 CPU ranks, gloo) end to end, inside a 2-job Hydra multirun: the known
template bug re-ran the whole sweep in every child rank. One multirun (~60 s on 2 busy cores) is
shared by the tests of this module; each checks one behaviour of it."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lm_lab.train import run as train

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = (16, 24)  # the swept override: job 0 and job 1
COMMON = (  # tiny, deterministic (no dropout), a real lr from step 0 so the loss moves
    "task=generate",
    "data=text",
    "tokenizer=char",
    "model.n_layers=1",
    "model.dropout=0.0",
    "data.block_size=32",
    "data.train_windows_per_epoch=64",
    "data.eval_windows=16",
    "task.scheduler.warmup_steps=0",
    "task.optimizer.lr=3e-3",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
    "extras.print_config=false",
    "callbacks.progress_bar=null",
)
PER_RANK_BATCH, RANKS = 4, 2
LOSS_RTOL = 1e-4  # gloo sums in another order than one process does; nothing else differs
RANK_LINE = re.compile(r"\[rank (\d)/(\d)\] overrides=(\[.*?\]) run_dir=(\S+)")


def write_corpus(root: Path) -> Path:
    words = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "cats")
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.txt", 3000), ("validation.txt", 600)):
        (root / name).write_text(" ".join(words[(i * 7 + i // 5) % len(words)] for i in range(n)))
    return root


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    data = write_corpus(tmp / "data")
    widths = ",".join(map(str, WIDTHS))
    command = [
        sys.executable,
        "train.py",
        "-m",
        "trainer=ddp_sim",
        f"data.root={data}",
        f"model.d_model={widths}",
        f"data.batch_size={PER_RANK_BATCH}",
        f"paths.log_dir={tmp / 'logs'}",
        *COMMON,
    ]
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"logs": tmp / "logs", "data": data, "output": done.stdout + done.stderr}


def job_dirs(logs: Path) -> list[Path]:
    return sorted(p.parent for p in logs.rglob("metrics.json"))


def test_multirun_creates_exactly_one_run_dir_per_job(multirun):
    dirs = job_dirs(multirun["logs"])
    assert [d.name for d in dirs] == ["0", "1"] and dirs[0].parent == dirs[1].parent
    assert not (multirun["logs"] / "generate" / "runs").exists()  # no stray child-rank run dirs


def test_every_rank_of_a_job_trains_that_jobs_overrides(multirun):
    seen = {}
    for rank, world, overrides, run_dir in RANK_LINE.findall(multirun["output"]):
        width = next(o for o in ast.literal_eval(overrides) if o.startswith("model.d_model="))
        seen[(Path(run_dir).name, int(rank))] = (int(world), width)
    assert seen == {
        (str(job), rank): (RANKS, f"model.d_model={width}")
        for job, width in enumerate(WIDTHS)
        for rank in range(RANKS)
    }


def test_only_rank_zero_writes_files(multirun):
    expected = {
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "csv/hparams.yaml",  # the resolved config, logged by rank 0
        "csv/metrics.csv",
        "metrics.json",
        "tokenizer.json",
        "train.log",
    }
    for job in job_dirs(multirun["logs"]):
        files = {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file()}
        assert files == expected, job  # no train_ddp_process_1.log, no second .hydra


def test_global_batch_is_stated(multirun):
    assert f"= {PER_RANK_BATCH * RANKS}" in multirun["output"]
    assert "global batch" in multirun["output"]


def test_ddp_loss_matches_one_process_with_the_same_global_batch(multirun, compose):
    ddp = json.loads((job_dirs(multirun["logs"])[0] / "metrics.json").read_text())["metrics"]
    cfg = compose(
        *COMMON,
        f"data.root={multirun['data']}",
        f"model.d_model={WIDTHS[0]}",
        f"data.batch_size={PER_RANK_BATCH * RANKS}",
    )
    single = train(cfg)["metrics"]
    for key in ("val/loss", "test/loss"):
        assert ddp[key] == pytest.approx(single[key], rel=LOSS_RTOL), key
