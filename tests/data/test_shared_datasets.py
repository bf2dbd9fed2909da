"""The team's real data sets under ../shared/data load through the same sources."""

from pathlib import Path

import pytest

from lm_lab.data.datamodule import TextDataModule
from lm_lab.data.sources import CsvFiles, TextFiles
from lm_lab.data.tokenizers import ByteTokenizer

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


def test_sst2_loads_with_its_two_labels():
    splits = CsvFiles(shared("sst2")).load()
    assert {name: len(s.texts) for name, s in splits.items()} == {
        "train": 67349,
        "validation": 872,
        "test": 1821,
    }
    assert set(splits["train"].labels) == {"negative", "positive"}


def test_tinyshakespeare_builds_lm_windows():
    dm = TextDataModule(
        TextFiles(shared("tinyshakespeare")), ByteTokenizer(), "generate", batch_size=8,
        block_size=64, train_windows_per_epoch=16, eval_windows=4,
    )  # fmt: skip
    dm.setup()
    assert dm.stats["train/chars"] == 1003854 and dm.test_split == "validation"
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 64)
    assert dm.chars_per_token == pytest.approx(1.0, abs=0.01)
