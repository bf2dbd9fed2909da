"""eval.py mode=icl and mode=length end to end, on a tiny LM trained in the test."""

import json
from pathlib import Path

import pytest

from lm_lab.evaluate import data_config
from lm_lab.evaluate import run as evaluate
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

WORDS = {"negative": "dull bad awful boring", "positive": "great fun lovely warm"}


def write_sentiment_csv(folder: Path) -> None:
    """A tiny labelled corpus, enough text for 32-token windows."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 60), ("validation", 20)):
        rows = ["text,label"]
        for i in range(n):
            label = "positive" if i % 2 else "negative"
            rows.append(f"{WORDS[label].split()[i % 4]} film number {i},{label}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def lm_checkpoint(compose, tmp_path) -> Path:
    """A char-level LM with learned positions (max_len 128 = block_size), trained a few steps."""
    write_sentiment_csv(tmp_path / "data")
    cfg = compose(
        "task=generate",
        "data=csv",
        f"data.root={tmp_path / 'data'}",
        "tokenizer=char",
        "model.n_layers=1",
        "model.positions=learned",
        "model.max_len=128",
        "data.block_size=128",
        "trainer.limit_train_batches=4",
    )
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"


def eval_config(compose, tmp_path, ckpt, *overrides):
    cfg = compose(f"ckpt_path={ckpt}", *overrides, config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    return cfg


def test_icl_mode_writes_a_k_shot_table_and_curve(compose, tmp_path, lm_checkpoint):
    cfg = eval_config(
        compose,
        tmp_path,
        lm_checkpoint,
        "mode=icl",
        "split=validation",
        "icl.shots=[0,1]",
        "icl.seeds=2",
        "icl.max_queries=6",
        "icl.calibrate=true",
    )
    result = evaluate(cfg)
    assert [(row["k"], row["seeds"]) for row in result["rows"]] == [(0, 1), (1, 2)]
    assert all(0 <= row["acc_calib_mean"] <= 1 for row in result["rows"])
    assert all(0 <= row["acc_mean"] <= 1 and row["queries"] == 6 for row in result["rows"])
    out = tmp_path / "eval"
    assert (out / "icl_kshot.png").stat().st_size > 0 and "acc_norm_mean" in (
        out / "icl.md"
    ).read_text()
    assert json.loads((out / "metrics.json").read_text())["mode"] == "icl"


def test_length_mode_reports_learned_positions_beyond_max_len_as_unsupported(
    compose, tmp_path, lm_checkpoint
):
    cfg = eval_config(compose, tmp_path, lm_checkpoint, "mode=length", "eval_lengths=[16,256]")
    rows = evaluate(cfg)["rows"]
    assert rows[0]["ppl"] > 1 and 0 <= rows[0]["induction_acc"] <= 1
    assert rows[1]["ppl"] is None and "not supported" in rows[1]["note"]


def test_unknown_mode_fails_fast(compose, tmp_path):
    cfg = eval_config(compose, tmp_path, tmp_path / "none.ckpt", "mode=bogus")
    with pytest.raises(ConfigError, match="mode=bogus"):
        evaluate(cfg)


def test_another_data_set_replaces_the_checkpoints_data_config(compose, tmp_path):
    """An LM trained on text files, probed with data=csv: no text-source key may survive."""
    saved = compose("task=generate", "data=text", f"data.root={tmp_path / 'text'}")
    cfg = compose("ckpt_path=x.ckpt", "data=csv", f"data.root={tmp_path}", config_name="eval")
    data = data_config(cfg, saved)
    assert data.source == cfg.data.source and data.source.root == str(tmp_path)
    assert data.task == "generate"  # resolved against the checkpoint's task
    tweak = compose("ckpt_path=x.ckpt", "+data.batch_size=3", config_name="eval")
    assert data_config(tweak, saved).source == saved.data.source  # a tweak still merges
