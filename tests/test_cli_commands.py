"""What a user types: train.py, eval.py and generate.py as subprocesses from a fresh working
directory, as the README shows them: no hydra.run.dir (its interpolations must resolve in every
script's config), only paths.log_dir to keep the logs under tmp, and no PROJECT_ROOT (each
script sets it). One tiny LM, trained once with `logger=[]`, serves every command."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = (
    "task=generate", "data=text", "data.root=data", "tokenizer=char", "model.d_model=32",
    "model.n_layers=1", "data.block_size=32", "data.batch_size=8",
    "data.train_windows_per_epoch=32", "data.eval_windows=8", "trainer.max_epochs=2",
    "trainer.enable_model_summary=false", "callbacks.progress_bar.every_s=0",
    "extras.print_config=false",
)  # fmt: skip
MESSAGES = ("free cash prize now", "lunch at noon today", "win a free phone", "see you at home")


def command(
    script: str, *args: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """`python <script> args...` started in `cwd`, logging to cwd/logs; stdout and stderr are
    pipes, as under `> train.log` or CI; `stdin` is fed to the command (else it reads none)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "HYDRA_FULL_ERROR")}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args, f"paths.log_dir={cwd / 'logs'}"],
        cwd=cwd,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=300,
    )


def latest_run_dir(logs: Path) -> Path:
    return max(logs.glob("runs/*/"), key=lambda path: path.stat().st_mtime)


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh working directory holding a text corpus and one LM run trained without a logger
    (and the finished train.py process)."""
    cwd = tmp_path_factory.mktemp("user")
    (cwd / "data").mkdir()
    (cwd / "data" / "train.txt").write_text("\n".join(MESSAGES * 30) + "\n")
    (cwd / "data" / "validation.txt").write_text("\n".join(MESSAGES * 8) + "\n")
    done = command("train.py", *TINY_LM, "logger=[]", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd, done


@pytest.fixture(scope="module")
def workdir(training) -> Path:
    return training[0]


@pytest.fixture(scope="module")
def best_ckpt(workdir) -> Path:
    return latest_run_dir(workdir / "logs" / "generate") / "checkpoints" / "best.ckpt"


def test_a_run_without_a_logger_writes_metrics_json_with_its_best(workdir):
    run_dir = latest_run_dir(workdir / "logs" / "generate")
    result = json.loads((run_dir / "metrics.json").read_text())
    assert not (run_dir / "csv").exists() and not (run_dir / "tensorboard").exists()
    best = result["best"]
    assert best["metric"] == "val/loss" and best["model_path"].endswith("best.ckpt")
    assert best["value"] <= result["metrics"]["val/loss"] + 1e-6  # the last is never better
    assert best["step"] in (4, 8)  # 4 batches an epoch, validated after each of 2 epochs


def test_eval_py_tests_a_checkpoint_as_the_readme_shows(workdir, best_ckpt):
    done = command("eval.py", f"ckpt_path={best_ckpt}", cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((latest_run_dir(workdir / "logs" / "eval") / "metrics.json").read_text())
    assert result["metrics"]["test/loss"] > 0
    assert "it/s" not in done.stdout + done.stderr  # a pipe gets log lines, never a bar


def test_generate_py_continues_the_prompt_as_the_readme_shows(workdir, best_ckpt):
    args = ("prompt=ROMEO:", "max_new_tokens=6", "temperature=0.8", "top_k=50")
    done = command("generate.py", f"ckpt_path={best_ckpt}", *args, cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = latest_run_dir(workdir / "logs" / "sample") / "samples.jsonl"
    (sample,) = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sample["prompt"] == "ROMEO:" and len(sample["completion"]) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("prompt=é",), "cannot parse the override 'prompt=é': quote the value"),
    ],
)  # generate.py's own checks (num_samples=0, ...): in-process, tests/test_generate.py
def test_generate_py_errors_are_one_line_exit_2(workdir, best_ckpt, args, message):
    done = command("generate.py", f"ckpt_path={best_ckpt}", *args, cwd=workdir)
    assert error_line(done).startswith(f"error: {message}")


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refused command: exit 2, no traceback."""
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def test_eval_icl_on_a_users_own_csv_uses_the_label_names(workdir, best_ckpt):
    csv_dir = workdir / "spam"
    csv_dir.mkdir()
    rows = [f"{text},{'spam' if 'free' in text else 'ham'}" for text in MESSAGES]
    for split in ("train", "validation"):
        (csv_dir / f"{split}.csv").write_text("\n".join(["text,label", *rows * 3]) + "\n")
    done = command(
        "eval.py", f"ckpt_path={best_ckpt}", "mode=icl", "data=csv", f"data.root={csv_dir}",
        "split=validation", "icl.shots=[0,1]", "icl.seeds=1", "icl.max_queries=4",
        "icl.context=128", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "using the generic template" in done.stdout + done.stderr
    result = json.loads((latest_run_dir(workdir / "logs" / "eval") / "metrics.json").read_text())
    assert result["template"]["verbalizers"] is None
    assert [row["k"] for row in result["rows"]] == [0, 1]


def test_training_into_a_pipe_logs_a_progress_line_per_interval(training):
    """`make train > train.log` printed nothing between the model summary and the end: without
    a terminal, plain lines come every callbacks.progress_bar.every_s seconds (0: every step)."""
    cwd, done = training
    lines = [line for line in done.stdout.splitlines() if "train: step " in line]
    line_form = r"train: step (\d+)/8, epoch (\d)/2, loss [\d.]+, ([\d,]+) tokens/s, ETA"
    steps = [re.search(line_form, line) for line in lines]
    assert all(steps), lines
    # 4 batches an epoch, 2 epochs; epochs counted from 1
    assert [(int(m[1]), int(m[2])) for m in steps] == [(s, 1 + (s > 4)) for s in range(1, 9)]
    assert all(int(m[3].replace(",", "")) > 0 for m in steps)
    log_file = latest_run_dir(cwd / "logs" / "generate") / "train.log"  # lm_lab's logging
    assert sum("train: step " in line for line in log_file.read_text().splitlines()) == 8
    assert not re.search(r"Epoch \d", done.stdout + done.stderr)  # no Rich or tqdm bar


def test_generate_py_reads_the_prompt_from_stdin_with_prompt_dash(workdir, best_ckpt):
    """What no shell quoting mangles: `echo 'def fibonacci(n):' | generate.py prompt=-`."""
    done = command(
        "generate.py", f"ckpt_path={best_ckpt}", "prompt=-", "max_new_tokens=4",
        cwd=workdir, stdin="def fibonacci(n):\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    samples = latest_run_dir(workdir / "logs" / "sample") / "samples.jsonl"
    (sample,) = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sample["prompt"] == "def fibonacci(n):\n" and sample["new_tokens"] == 4
    assert "4 tokens in " in done.stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ("prompt=def fibonacci(n):",),
            None,
            "cannot parse the override 'prompt=def fibonacci(n):': quote the value for Hydra "
            "inside the shell's quotes, e.g. 'prompt=\"def fibonacci(n):\"' (non-ASCII and "
            "special characters), or pass prompt=- and pipe the text on stdin",
        ),
        (
            ("prompt_file=my prompts (v2).txt",),
            None,
            "cannot parse the override 'prompt_file=my prompts (v2).txt': quote the value",
        ),
        (("prompt=-",), "", "prompt=-: nothing on stdin; pipe the prompt in"),
    ],
)
def test_generate_py_prompt_errors_are_one_line_exit_2(workdir, best_ckpt, args, stdin, message):
    done = command("generate.py", f"ckpt_path={best_ckpt}", *args, cwd=workdir, stdin=stdin)
    assert error_line(done).startswith(f"error: {message}")


def test_eval_icl_on_data_with_one_label_is_refused(workdir, best_ckpt):
    """Every k scored accuracy 1.000: one label leaves nothing to choose."""
    csv_dir = workdir / "one_label"
    csv_dir.mkdir()
    for split in ("train", "validation"):
        rows = [f"{text},spam" for text in MESSAGES]
        (csv_dir / f"{split}.csv").write_text("\n".join(["text,label", *rows]) + "\n")
    done = command(
        "eval.py", f"ckpt_path={best_ckpt}", "mode=icl", "data=csv", f"data.root={csv_dir}",
        "split=validation", "icl.shots=[0]", "icl.seeds=1", cwd=workdir,
    )  # fmt: skip
    assert error_line(done) == (
        f"error: {csv_dir / 'train.csv'}: mode=icl needs at least 2 labels in the training split "
        "(as task=classify does), found ['spam']; check data.source.label_column"
    )


def test_eval_icl_chat_on_a_model_without_a_chat_template_is_refused(workdir, best_ckpt):
    """A char-level LM was never taught a conversation: one line, exit 2, before any data is
    read (the data folder here does not even exist)."""
    done = command(
        "eval.py", f"ckpt_path={best_ckpt}", "mode=icl", "data=csv",
        f"data.root={workdir / 'nowhere'}", "icl.chat=true", cwd=workdir,
    )  # fmt: skip
    assert error_line(done) == (
        f"error: icl.chat=true: ckpt_path={best_ckpt} has no chat template (chat_template in "
        "tokenizer_config.json, or chat_template.jinja); drop it to prompt in plain text"
    )
