"""Each bad input ends in one line naming the key or file and what to change, exit status 2, no
traceback, and no metrics.json. docs/errors.md lists these cases and their messages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from lm_lab.cli.entry import cli, guarded
from lm_lab.cli.validate import validate_config
from lm_lab.evaluate import run as evaluate
from lm_lab.sizing import encoder_config
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    tmp_path: Path, *overrides: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
    )


def test_cli_prints_one_line_and_exits_2(tmp_path):
    done = run_cli(tmp_path, "task.optimizer.lr=0")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: task.optimizer.lr=0: must be a number > 0, e.g. 1e-3"
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.foo=1", "error: Could not override 'model.foo'. To append to your config use"),
        ("model=foo", "Could not find 'model/foo'; choose one of: baby_gpt, bilstm, hybrid"),
        ("model.d_model=${oops", "error: mismatched input"),
    ],
)
def test_hydra_composition_errors_are_one_line(override, message, compose, capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as stopped:
        cli(lambda: compose(override))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_full_error_shows_the_exception(compose, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException):
        cli(lambda: compose("model.foo=1"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.n_heads=5", r"model\.n_heads=5: must divide model\.d_model=32"),
        ("task.optimizer.lr=-1", r"task\.optimizer\.lr=-1"),
        ("data.block_size=1", r"data\.block_size=1: must be an integer >= 2"),
        ("data.batch_size=0", r"data\.batch_size=0"),
        ("model.dropout=1.0", r"model\.dropout=1\.0: must be a number in \[0, 1\)"),
        ("trainer.max_epochs=0", r"trainer\.max_epochs=0"),
        ("model.d_model=null", r"model\.d_model=None"),
    ],
)
def test_invalid_numbers_are_named_before_anything_is_built(override, key, compose):
    with pytest.raises(ConfigError, match=key):
        validate_config(compose(override))


def test_constructor_errors_are_one_line_exit_2(compose, capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    cfg = compose("model.d_model=36", "model.n_heads=4")  # head size 9: rope needs it even
    with pytest.raises(SystemExit) as stopped:
        guarded(instantiate, encoder_config(cfg.model))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: positions=rope needs an even head size") and "\n" not in err
    assert "model.n_heads=4" in err


def test_missing_checkpoint_names_ckpt_path(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path=.*nope\.ckpt: no such file"):
        evaluate(compose(f"ckpt_path={tmp_path / 'nope.ckpt'}", config_name="eval"))
    with pytest.raises(ConfigError, match=r"ckpt_path=.*nope\.ckpt: no such file"):
        train(compose(f"ckpt_path={tmp_path / 'nope.ckpt'}"))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x00garbage", "not a readable checkpoint"), (None, "not an lm_lab checkpoint")],
)
def test_corrupt_or_foreign_checkpoint_is_refused(content, message, compose, tmp_path):
    path = tmp_path / "bad.ckpt"
    if content is None:
        torch.save({"state_dict": {}}, path)  # a torch file, but not one lm_lab wrote
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        evaluate(compose(f"ckpt_path={path}", config_name="eval"))
    with pytest.raises(ConfigError, match=message):
        train(compose(f"ckpt_path={path}"))


def test_csv_whose_texts_are_all_empty_fails_after_counting(compose, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nhello there,a\ngood bye,b\n")
    (tmp_path / "validation.csv").write_text('text,label\n"  ",a\n,b\n')
    cfg = compose("task=classify", "data=csv", f"data.root={tmp_path}", "tokenizer=char")
    with pytest.raises(ConfigError, match=r"validation\.csv: no labelled, non-empty texts"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_resume_needs_a_run_dir_with_a_last_checkpoint(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"resume=.*no checkpoints/last\.ckpt in it"):
        train(compose(f"resume={tmp_path}", tiny=False))


def test_resume_refuses_other_overrides(compose, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"keeps its own config; drop trainer\.max_epochs=3"):
        train(compose(f"resume={tmp_path}", "trainer.max_epochs=3", tiny=False))
