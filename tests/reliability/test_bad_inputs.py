"""Each bad input ends in one line naming the key or file and what to change, exit status 2, no
traceback, and no metrics.json. docs/errors.md lists these cases and their messages."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

import lm_lab.fit
from lm_lab.checkpoint import CheckpointMeta
from lm_lab.cli.entry import cli, guarded
from lm_lab.cli.run_lock import LOCK_FILE
from lm_lab.cli.validate import RULES, validate_config
from lm_lab.data.preparation.prepare import MemoryCorpus, prepare
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import ByteTokenizer
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
    assert done.stderr.strip() == (
        "error: task.optimizer.lr=0: must be a finite number > 0, e.g. 1e-3"
    )
    assert not (tmp_path / "run" / "metrics.json").exists()


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The whole stderr of a run that failed on bad input: exit 2, one line, no traceback."""
    err = done.stderr.strip()
    assert done.returncode == 2, err[-2000:]
    assert "\n" not in err and err.startswith("error: "), err[-2000:]
    return err


def test_a_key_left_by_an_experiment_for_another_encoder_is_one_line(tmp_path):
    done = run_cli(tmp_path, "experiment=pydoc_classify", "model=bilstm", "task.baseline=null")
    assert one_line_error(done) == (
        "error: model.kernel_sizes: lm_lab.encoders.bilstm.BiLSTMEncoder has no parameter "
        "'kernel_sizes' (an experiment or override set it for another choice of the group): "
        "drop it with ~model.kernel_sizes"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("resume=true",), "resume=True: resume= takes the run dir to continue, e.g. resume="),
        (("trainer=gpu",), "trainer.accelerator=gpu: no GPU is visible on this machine; use "),
    ],
    ids=["resume-true", "gpu"],
)
def test_train_refuses_before_reading_anything(overrides, message, compose):
    if "trainer=gpu" in overrides and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError) as raised:
        train(compose(*overrides, tiny=False))
    assert str(raised.value).startswith(message)


def test_unwritable_run_dir_is_one_line(tmp_path):
    done = run_cli(tmp_path, "hydra.run.dir=/proc/lm_lab_run")  # even root cannot write /proc
    assert one_line_error(done) == (
        "error: hydra.run.dir: cannot write /proc/lm_lab_run (No such file or directory); "
        "set hydra.run.dir (or paths.log_dir) to a writable folder"
    )


def test_second_run_in_a_busy_run_dir_is_refused(tmp_path):
    """A live process (this test's) holds the lock: train.py refuses before writing anything."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = f"{socket.gethostname()} {os.getpid()}"
    (run_dir / LOCK_FILE).write_text(holder)
    err = one_line_error(run_cli(tmp_path))
    assert f"hydra.run.dir={run_dir}: another run (host, pid: {holder}) is writing there" in err
    assert (run_dir / LOCK_FILE).read_text() == holder  # not taken over
    assert not (run_dir / "checkpoints").exists()


def test_stale_lock_is_taken_over_and_released(compose, tmp_path):
    cfg = compose("task=generate", "tokenizer=byte", "train=false", "test=false")
    process = subprocess.Popen(["true"])
    process.wait()  # gone: its pid is free
    lock = Path(cfg.paths.output_dir) / LOCK_FILE
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} {process.pid}")
    seen = []
    with_lock_check = lm_lab.fit.fit_and_test

    def fit_and_test(cfg):
        seen.append(lock.read_text())
        return with_lock_check(cfg)

    lm_lab.fit.fit_and_test = fit_and_test
    try:
        train(cfg)
    finally:
        lm_lab.fit.fit_and_test = with_lock_check
    assert seen == [f"{socket.gethostname()} {os.getpid()}"]  # ours while the run ran
    assert not lock.exists()  # released at the end


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.foo=1", "error: Could not override 'model.foo'. To append to your config use"),
        ("model=foo", "Could not find 'model/foo'; choose one of: baby_gpt, bilstm, cnn, hybrid"),
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
        (
            "model.n_heads=5",
            r"model\.n_heads=5: must divide model\.d_model=32; use e\.g\. model\.n_heads=4",
        ),
        ("task.optimizer.lr=-1", r"task\.optimizer\.lr=-1"),
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


# one bad value per rule of lm_lab.cli.validate.RULES and the message it must give, written out
# by hand: a rule or its hint removed or changed turns one case red
RULE_CASES = {
    "model.d_model": (("model.d_model=0",), "model.d_model=0: must be an integer >= 1"),
    "model.n_layers": (("model.n_layers=0",), "model.n_layers=0: must be an integer >= 1"),
    "model.n_heads": (
        ("model.n_heads=0",),
        "model.n_heads=0: must be an integer >= 1 that divides model.d_model",
    ),
    "model.dropout": (("model.dropout=1.0",), "model.dropout=1.0: must be a number in [0, 1)"),
    "task.head_dropout": (
        ("task.head_dropout=1.5",),
        "task.head_dropout=1.5: must be a number in [0, 1)",
    ),
    "task.members": (
        ("task.members=0",),
        "task.members=0: must be an integer >= 1 (models trained side by side, averaged)",
    ),
    "task.monitor_mode": (("task.monitor_mode=up",), "task.monitor_mode='up': must be min or max"),
    "task.optimizer.lr": (
        ("task.optimizer.lr=inf",),
        "task.optimizer.lr=inf: must be a finite number > 0, e.g. 1e-3",
    ),
    "task.optimizer.weight_decay": (
        ("task.optimizer.weight_decay=-0.1",),
        "task.optimizer.weight_decay=-0.1: must be a number >= 0",
    ),
    "task.optimizer.betas": (
        ("task.optimizer.betas=[0.9,1.0]",),
        "task.optimizer.betas=[0.9, 1.0]: must be two numbers in [0, 1), e.g. [0.9,0.99]",
    ),
    "task.scheduler.warmup_steps": (
        ("task.scheduler.warmup_steps=-1",),
        "task.scheduler.warmup_steps=-1: must be an integer >= 0",
    ),
    "task.scheduler.min_lr_ratio": (
        ("task.scheduler.min_lr_ratio=1.5",),
        "task.scheduler.min_lr_ratio=1.5: must be a number in [0, 1]",
    ),
    "finetune.rank": (
        ("finetune=lora", "finetune.rank=-2"),
        "finetune.rank=-2: must be an integer >= 1 (the rank of each LoRA update)",
    ),
    "finetune.length": (
        ("finetune=prompt", "finetune.length=0"),
        "finetune.length=0: must be an integer >= 1 (soft-prompt vectors)",
    ),
    "finetune.dropout": (
        ("finetune=lora", "finetune.dropout=1"),
        "finetune.dropout=1: must be a number in [0, 1)",
    ),
    "trainer.max_epochs": (
        ("trainer.max_epochs=0",),
        "trainer.max_epochs=0: must be -1 or an integer >= 1",
    ),
    "trainer.max_steps": (
        ("trainer.max_steps=0",),
        "trainer.max_steps=0: must be -1 or an integer >= 1",
    ),
    "trainer.accumulate_grad_batches": (
        ("trainer.accumulate_grad_batches=0",),
        "trainer.accumulate_grad_batches=0: must be an integer >= 1",
    ),
    "trainer.gradient_clip_val": (
        ("trainer.gradient_clip_val=0",),
        "trainer.gradient_clip_val=0: must be null or a number > 0",
    ),
    "trainer.val_check_interval": (
        ("trainer.val_check_interval=1.5",),
        "trainer.val_check_interval=1.5: must be null (once per epoch), an integer >= 1 "
        "(batches) or a fraction in (0, 1] of an epoch",
    ),
}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
        ("data.max_length=0", "data.max_length=0: must be an integer >= 1"),
        ("data.block_size=1", "data.block_size=1: must be an integer >= 2"),
        (
            "data.train_windows_per_epoch=0",
            "data.train_windows_per_epoch=0: must be an integer >= 1",
        ),
        ("data.eval_windows=0", "data.eval_windows=0: must be an integer >= 1 or null"),
        (
            "data.max_train_examples=-1",
            "data.max_train_examples=-1: must be an integer >= 1 or null",
        ),
        ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
    ],
)
def test_data_counts_are_checked_before_data_loads(override, message, compose):
    """The datamodule's own check (data.counts.check_counts), run by validate_config."""
    with pytest.raises(ConfigError) as raised:
        validate_config(compose(override))
    assert str(raised.value).startswith(message)


def test_every_rule_has_a_case():
    assert {key for key, _, _ in RULES} == set(RULE_CASES)


@pytest.mark.parametrize("key", RULE_CASES)
def test_each_rule_names_its_key_and_hint(key, compose):
    overrides, message = RULE_CASES[key]
    with pytest.raises(ConfigError) as raised:
        validate_config(compose(*overrides))
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("task.monitor=val/ppl",),
            "task.monitor=val/ppl: task=classify never logs it; use one of val/loss, val/acc, "
            "val/f1",
        ),
        (
            ("task=generate", "trainer.val_check_interval=9"),  # 64 windows / 8 = 8 batches
            "trainer.val_check_interval=9: more than the 8 training batches of an epoch; use at "
            "most 8, a fraction such as 0.5, or null",
        ),
        (
            ("trainer.limit_train_batches=3", "trainer.val_check_interval=4"),
            "trainer.val_check_interval=4: more than the 3 training batches",
        ),
        (
            ("task=generate", "model.positions=learned", "model.max_len=31"),  # block_size=32
            "data.block_size=32: longer than model.max_len=31 (positions=learned); lower "
            "data.block_size or raise model.max_len",
        ),
        (
            ("model.positions=learned", "model.max_len=64", "finetune=prompt"),
            "data.max_length=64 + finetune.length=8: longer than model.max_len=64",
        ),
        (
            ("trainer.accelerator=gpu",),
            "trainer.accelerator=gpu: no GPU is visible on this machine; use trainer=cpu "
            "(or trainer.accelerator=auto: a GPU when there is one)",
        ),
    ],
    ids=[
        "monitor",
        "val-interval-windows",
        "val-interval-limit",
        "learned",
        "learned-prompt",
        "gpu",
    ],
)
def test_values_that_contradict_each_other_or_the_machine(overrides, message, compose):
    if "trainer.accelerator=gpu" in overrides and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError) as raised:
        validate_config(compose(*overrides))
    assert str(raised.value).startswith(message)


def test_task_metrics_are_the_ones_logged():
    """task.monitor is checked against METRICS: they must be what the tasks really log (the
    names every run writes, docs/architecture.md)."""
    from lm_lab.tasks.classifier import Classifier
    from lm_lab.tasks.language_model import LanguageModel

    assert Classifier.METRICS == ("loss", "acc", "f1")
    assert LanguageModel.METRICS == ("loss", "acc", "ppl", "bpc")


def test_bad_values_are_reported_before_any_data_is_read(compose, tmp_path):
    """validate_config runs before data loads: the data root does not exist, yet the error
    is about the bad value."""
    cfg = compose("data=csv", f"data.root={tmp_path / 'nowhere'}", "task.optimizer.betas=[1,0]")
    with pytest.raises(ConfigError, match=r"^task\.optimizer\.betas=\[1, 0\]: must be two"):
        train(cfg)


def lm_checkpoint(path: Path) -> Path:
    CheckpointMeta({"task": {"name": "generate"}}, ByteTokenizer().to_json()).save(path, {})
    return path


def test_lm_checkpoint_cannot_continue_as_a_classifier(compose, tmp_path):
    ckpt = lm_checkpoint(tmp_path / "lm.ckpt")
    with pytest.raises(ConfigError) as raised:
        validate_config(compose(f"ckpt_path={ckpt}"))
    assert str(raised.value) == (
        f"ckpt_path={ckpt}: a task=generate checkpoint cannot continue as task=classify; "
        f"start from its backbone with init_from={ckpt}"
    )


def test_init_from_errors_name_init_from(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"^init_from=.*nope\.ckpt: no such file"):
        validate_config(compose(f"init_from={tmp_path / 'nope.ckpt'}"))
    (tmp_path / "bad.ckpt").write_bytes(b"\x00")
    with pytest.raises(ConfigError, match=r"^init_from=.*bad\.ckpt: not a readable checkpoint"):
        validate_config(compose(f"init_from={tmp_path / 'bad.ckpt'}"))


def write_csv(root: Path, train: str, validation: str = "text,label\nhi,a\nho,b\n") -> Path:
    root.mkdir(exist_ok=True)
    (root / "train.csv").write_text(train)
    (root / "validation.csv").write_text(validation)
    return root


def test_header_only_csv_names_the_file(compose, tmp_path):
    root = write_csv(tmp_path / "data", "text,label\n")
    with pytest.raises(ConfigError) as raised:
        train(compose("data=csv", f"data.root={root}", "tokenizer=char"))
    assert str(raised.value) == f"{root / 'train.csv'}: a header but no rows; add examples below it"


def test_val_check_interval_past_a_classification_epoch(compose, tmp_path):
    """Classification batches per epoch are known once the data is read (2 rows: 1 batch)."""
    root = write_csv(tmp_path / "data", "text,label\nhello,a\nbye,b\n")
    cfg = compose("data=csv", f"data.root={root}", "tokenizer=char", "trainer.val_check_interval=2")
    with pytest.raises(ConfigError, match=r"^trainer\.val_check_interval=2: more than the 1 "):
        train(cfg)


def test_truncated_corpus_manifest_is_named_and_rebuilt(tmp_path, caplog):
    corpus = MemoryCorpus(
        {"train": Split(["hello world", "more text"]), "validation": Split(["x"])}
    )
    fresh = prepare(corpus, ByteTokenizer(), tmp_path)
    manifest = fresh.folder / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])  # a disk that filled up mid-write
    again = prepare(corpus, ByteTokenizer(), tmp_path)
    assert np.array_equal(again.shards("train").arrays[0], fresh.shards("train").arrays[0])
    assert f"{manifest}: unreadable manifest" in caplog.text
    prepare(corpus, ByteTokenizer(), tmp_path)
    assert caplog.text.count("unreadable manifest") == 1  # rebuilt: the third read finds it
