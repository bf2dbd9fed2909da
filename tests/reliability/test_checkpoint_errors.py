"""Checkpoints that do not fit the run, or are not what lm_lab writes, are one line naming the
option that gave them, before any data is read."""

from pathlib import Path

import pytest
import torch

from lm_lab.checkpoint import KEY, read_checkpoint
from lm_lab.cli.validate import validate_config
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError


def test_ckpt_path_of_another_width_names_the_key(lm_run, compose):
    best = lm_run[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as raised:
        validate_config(compose(*lm_run[1], "model.d_model=16", f"ckpt_path={best}"))
    assert str(raised.value) == (
        f"ckpt_path={best}: the model differs from the checkpoint's: model.d_model=16 "
        "(checkpoint: 32); set these keys to the checkpoint's values"
    )


def test_ckpt_path_of_another_architecture_names_the_keys(lm_run, compose):
    last = lm_run[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=rf"^ckpt_path={last}: the model differs") as raised:
        validate_config(compose(*lm_run[1], "model=bilstm", f"ckpt_path={last}"))
    assert "model._target_='lm_lab.encoders.bilstm.BiLSTMEncoder' (checkpoint: " in str(
        raised.value
    )


def test_ckpt_path_may_change_dropout_only(lm_run, compose):
    last = lm_run[0] / "checkpoints" / "last.ckpt"
    validate_config(compose(*lm_run[1], "model.dropout=0.3", f"ckpt_path={last}"))


def test_ckpt_path_may_change_gradient_checkpointing(lm_run, compose):
    """Recomputing activations changes no weight: a resumed run may turn it on."""
    last = lm_run[0] / "checkpoints" / "last.ckpt"
    validate_config(compose(*lm_run[1], "model.gradient_checkpointing=true", f"ckpt_path={last}"))


def test_ckpt_path_of_a_weights_only_best_ckpt_points_to_last(lm_run, compose):
    best = lm_run[0] / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match=rf"^ckpt_path={best}: holds the weights only"):
        validate_config(compose(*lm_run[1], f"ckpt_path={best}"))


def entry_of(lm_run) -> dict:
    return torch.load(lm_run[0] / "checkpoints" / "best.ckpt", weights_only=True)[KEY]


MALFORMED = {  # what the lm_lab entry is -> what the message says about it
    "not a dict": (lambda entry: ["config", "tokenizer"], "a list, not a dict"),
    "no config": (lambda entry: {"tokenizer": entry["tokenizer"]}, "missing ['config']"),
    "tokenizer not a string": (lambda entry: entry | {"tokenizer": 3}, "tokenizer is a int"),
    "label names not strings": (lambda entry: entry | {"label_names": [0, 1]}, "label_names is"),
    "adapter_only not a bool": (lambda entry: entry | {"adapter_only": "no"}, "adapter_only is"),
    "unknown field": (lambda entry: entry | {"code": "x"}, "unknown fields ['code']"),
    "newer format": (lambda entry: entry | {"format_version": 99}, "format_version 99 is newer"),
}


@pytest.mark.parametrize(("change", "why"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_lm_lab_entry_is_one_line(change, why, lm_run, tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, KEY: change(entry_of(lm_run))}, path)
    with pytest.raises(ConfigError) as raised:
        read_checkpoint(path, key="init_from")
    message = str(raised.value)
    assert message.startswith(f"init_from={path}: malformed lm_lab entry ({why}")
    assert message.endswith("; use the file as an lm_lab run wrote it") and "\n" not in message


def test_resume_with_a_truncated_last_ckpt_names_resume(lm_run, compose, tmp_path):
    """A disk that filled up (before checkpoints were written atomically) left half a file."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    whole = (lm_run[0] / "checkpoints" / "last.ckpt").read_bytes()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError) as raised:
        train(compose(f"resume={run_dir}", tiny=False))
    assert str(raised.value) == (
        f"resume={run_dir} (checkpoints/last.ckpt): not a readable checkpoint "
        "(truncated or corrupt: its zip archive is incomplete)"
    )


@pytest.mark.parametrize(
    ("content", "why"), [(b"", "the file is empty"), (b"\x00junk", "not a torch checkpoint file")]
)
def test_unreadable_file_reason_is_one_clause(content, why, tmp_path):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        read_checkpoint(path)
    assert str(raised.value) == f"ckpt_path={path}: not a readable checkpoint ({why})"


def test_a_checkpoint_that_is_not_a_dict_is_not_lm_labs(tmp_path: Path):
    path = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ConfigError, match=r"not an lm_lab checkpoint \(no config/tokenizer"):
        read_checkpoint(path)


def test_ckpt_path_whose_weights_do_not_fit_is_one_line(lm_run, compose, tmp_path):
    """Same model keys, other data: the char tokenizer fitted on it has another vocabulary, so
    the embedding differs; named before Lightning loads anything."""
    (tmp_path / "train.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    (tmp_path / "validation.txt").write_text("pack my box with five dozen liquor jugs\n" * 10)
    last = lm_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose(*lm_run[1], f"data.root={tmp_path}", f"ckpt_path={last}", "logger=[]")
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    assert str(raised.value).startswith(
        f"ckpt_path={last}: its weights do not fit the model this config builds "
        "(backbone.embed.weight: (17, 32) in the checkpoint, (30, 32) here); continue it with"
    )
