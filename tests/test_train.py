"""End-to-end runs of train.run / evaluate.run on composed configs."""

import json
from pathlib import Path

import pytest

from lm_lab.evaluate import run as evaluate
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ENCODERS = ["transformer", "bilstm", "hybrid", "cnn"]


@pytest.mark.parametrize("task", ["classify", "generate"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_model_and_task_runs_fast_dev_run(encoder, task, compose):
    cfg = compose(f"model={encoder}", f"task={task}", "debug=fast_dev_run")
    result = train(cfg)
    expected = {"classify": "test/acc", "generate": "test/ppl"}[task]
    assert expected in result["metrics"]
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("task", "keys"),
    [("classify", ["test/acc", "test/f1", "test/loss"]), ("generate", ["test/loss", "test/bpc"])],
)
def test_checkpoint_alone_reproduces_test_metrics(task, keys, compose, tmp_path):
    cfg = compose(f"task={task}", "trainer.limit_train_batches=4", "trainer.limit_test_batches=3")
    trained = train(cfg)["metrics"]
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    ecfg = compose(f"ckpt_path={ckpt}", "trainer.limit_test_batches=3", config_name="eval")
    ecfg.paths.output_dir = str(tmp_path / "eval")
    evaluated = evaluate(ecfg)["metrics"]
    for key in keys:
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-5), key
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["metrics"] == evaluated


def test_classify_on_unlabelled_text_fails_before_training(compose, tmp_path):
    (tmp_path / "train.txt").write_text("some text " * 50)
    (tmp_path / "validation.txt").write_text("more text " * 20)
    cfg = compose("task=classify", "data=text", f"data.root={tmp_path}")
    with pytest.raises(ConfigError, match="task=classify"):
        train(cfg)


def test_missing_data_folder_names_the_key(compose, tmp_path):
    cfg = compose("task=classify", "data=csv", f"data.root={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="data.root"):
        train(cfg)


def test_a_folder_of_files_trains_and_metrics_count_tokens_seen(compose, tmp_path):
    """data=text on a flat folder of .md files: held-out validation, shards, and
    metrics.json's tokens seen = steps x batch x block (64 windows of 32 tokens)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"note{i}.md").write_text(f"# note {i}\n" + "some words here. " * (10 + i))
    cfg = compose("task=generate", "data=text", f"data.root={corpus}", "tokenizer=char")
    result = train(cfg)
    data = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["data"]
    assert data == result["data"] and data["train/tokens_seen"] == 64 * 32
    assert data["train/documents"] + data["validation/documents"] == 40
    assert data["validation/held_out_documents"] > 0 and "test/from_validation" in data
