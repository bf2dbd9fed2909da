"""The team's real data sets under ../shared/data load through the same sources."""

import pytest

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.sources import CsvFiles, TextFiles
from lm_lab.data.tokenization.tokenizers import ByteTokenizer


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)]
)
def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(
    ci, outcome, shared_data, monkeypatch
):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no-such-set not found"):
        shared_data("no-such-set")


def test_sst2_loads_with_its_two_labels(shared_data):
    splits = CsvFiles(shared_data("sst2")).load()
    assert {name: len(s.texts) for name, s in splits.items()} == {
        "train": 67349,
        "validation": 872,
        "test": 1821,
    }
    assert set(splits["train"].labels) == {"negative", "positive"}


def test_tinyshakespeare_builds_lm_windows(shared_data):
    dm = TextDataModule(
        TextFiles(shared_data("tinyshakespeare")), ByteTokenizer(), "generate", batch_size=8,
        block_size=64, train_windows_per_epoch=16, eval_windows=4,
    )  # fmt: skip
    dm.setup()
    assert dm.stats["train/chars"] == 1003854 and dm.test_split == "validation"
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 64)
    assert dm.chars_per_token["validation"] == pytest.approx(1.0, abs=0.01)
