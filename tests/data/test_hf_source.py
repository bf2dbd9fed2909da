"""data=hf on local files only (no hub is reachable here): columns, split mapping, ClassLabel."""

import csv
from pathlib import Path

import pytest

from lm_lab.data.sources.hf import HFDataset
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

POSITIVE = ["a fine film", "great fun", "loved it", "superb acting"]
NEGATIVE = ["dull and long", "awful plot", "boring", "a waste of time"]


def write_csv(path: Path, rows: list[tuple[str, str]], header=("sentence", "sentiment")) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for split, end in (("train", ""), ("dev", " indeed")):  # no text in both splits
        rows = [(t + end, "pos") for t in POSITIVE] + [(t + end, "neg") for t in NEGATIVE]
        paths[split] = str(tmp_path / f"{split}.csv")
        write_csv(Path(paths[split]), rows * 3)
    return paths


def test_csv_builder_with_renamed_columns_and_splits(files, tmp_path):
    source = HFDataset(
        "csv",
        data_files=files,
        text_column="sentence",
        label_column="sentiment",
        splits={"train": "train", "validation": "dev", "test": "test"},
        cache_dir=str(tmp_path / "hf"),
    )
    splits = source.load()
    assert set(splits) == {"train", "validation"}  # no test split: the datamodule uses validation
    assert splits["train"].texts[0] == POSITIVE[0]
    assert set(splits["validation"].labels) == {"pos", "neg"}


def test_class_label_ids_become_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    data = {"text": ["bad", "good", "unknown"], "label": [0, 1, -1]}
    files = {}
    for split in ("train", "validation"):  # one file each: no document serves two splits
        files[split] = str(tmp_path / f"{split}.parquet")
        Dataset.from_dict(data, features=features).to_parquet(files[split])
    source = HFDataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert source.load()["train"].labels == ["neg", "pos", None]


def test_missing_column_names_the_key(files, tmp_path):
    source = HFDataset("csv", data_files=files, splits={"train": "train", "validation": "dev"})
    source.cache_dir = str(tmp_path / "hf")
    with pytest.raises(ConfigError, match="data.source.text_column=text"):
        source.load()


def test_data_hf_trains_from_the_command_line_config(files, compose):
    cfg = compose(
        "task=classify",
        "data=hf",
        "data.root=csv",
        f"data.source.data_files={{train: {files['train']}, validation: {files['dev']}}}",
        "data.source.text_column=sentence",
        "data.source.label_column=sentiment",
        "debug=fast_dev_run",
    )
    result = train(cfg)
    data = result["data"]
    assert (data["train/read"], data["train/examples"], data["train/labels"]) == (24, 24, 2)
    assert data["test/from_validation"] == 1  # no test file given: tested on validation
    assert result["metrics"]["test/acc"] in {k / 8 for k in range(9)}  # 1 batch of 8 examples
