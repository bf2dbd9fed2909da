"""eval.py on other data than the checkpoint's: labels reach the head by name, never by order."""

import json
from pathlib import Path

import pytest

from lm_lab.evaluate import run as evaluate
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

WORDS = {"apple": "a", "berry": "b", "cherry": "c"}  # text word -> label


def write_csv(folder: Path, labels: str) -> Path:
    """train and validation files of 8 texts per label; each text names its label's fruit."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, first in (("train", 0), ("validation", 10)):  # no text in both, train's digits
        rows = ["text,label"]
        rows += [
            f"{word} {word} {i},{label}"
            for word, label in WORDS.items()
            if label in labels
            for i in range(first, first + 8)
        ]
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def classifier(compose, tmp_path) -> Path:
    """A char classifier of labels a, b, c, trained until it gets its own data right."""
    cfg = compose(
        "task=classify",
        "data=csv",
        f"data.root={write_csv(tmp_path / 'abc', 'abc')}",
        "tokenizer=char",
        "model.n_layers=1",
        "task.optimizer.lr=3e-3",
        "task.scheduler.warmup_steps=0",
        "trainer.max_epochs=12",
    )
    assert train(cfg)["metrics"]["test/acc"] == 1.0
    return Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"


def eval_on(compose, tmp_path, ckpt: Path, root: Path) -> dict:
    cfg = compose(f"ckpt_path={ckpt}", "data=csv", f"data.root={root}", config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    return evaluate(cfg)


def test_a_label_subset_is_scored_against_the_heads_own_order(compose, tmp_path, classifier):
    """Data with labels b, c only: re-sorted, they would be ids 0, 1 (the head's a, b), and every
    answer of a perfect classifier would count as wrong (acc 0.0)."""
    result = eval_on(compose, tmp_path, classifier, write_csv(tmp_path / "bc", "bc"))
    assert result["metrics"]["test/acc"] == 1.0
    assert result["data"]["train/labels"] == 3  # the head's classes, not the data's two
    assert result["data"]["validation/unknown_chars"] == 0  # eval's data report counts UNKs
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["data"]["validation/examples"] == 16  # tested on validation


def test_a_label_the_head_does_not_know_is_refused(compose, tmp_path, classifier):
    root = write_csv(tmp_path / "bcd", "bc")
    with (root / "validation.csv").open("a") as f:
        f.write("durian,d\n")
    with pytest.raises(ConfigError, match=r"label 'd' .* checkpoint's head \(labels: a, b, c\)"):
        eval_on(compose, tmp_path, classifier, root)
