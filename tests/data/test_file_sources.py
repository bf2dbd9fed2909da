"""Text, CSV and JSON-lines sources: what they read, what they drop, and how they fail."""

import csv
import json
from pathlib import Path

import pytest

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.sources import CsvFiles, JsonlFiles, TextFiles
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.utils.errors import ConfigError


def write_csv(path: Path, rows: list[dict[str, str]], columns=("text", "label")) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def csv_folder(root: Path, test: bool = True) -> Path:
    train = [
        {"text": "good film", "label": "pos"},
        {"text": "   ", "label": "neg"},  # whitespace only: dropped
        {"text": 'bad, "quoted" film', "label": "neg"},
        {"text": "no label here", "label": ""},
    ]
    write_csv(root / "train.csv", train)
    write_csv(root / "validation.csv", [{"text": "fine", "label": "pos"}])
    if test:
        write_csv(root / "test.csv", [{"text": "awful", "label": "neg"}])
    return root


def test_csv_reads_splits_drops_empty_texts_and_counts_them(tmp_path):
    splits = CsvFiles(csv_folder(tmp_path)).load()
    assert set(splits) == {"train", "validation", "test"}
    train = splits["train"]
    assert train.texts == ["good film", 'bad, "quoted" film', "no label here"]
    assert train.labels == ["pos", "neg", None]  # an empty label is unlabelled, not a class
    assert train.stats == {"read": 4, "dropped_empty_text": 1}


def test_csv_test_split_is_optional(tmp_path):
    assert set(CsvFiles(csv_folder(tmp_path, test=False)).load()) == {"train", "validation"}


def test_csv_missing_column_names_the_key_and_the_columns_found(tmp_path):
    csv_folder(tmp_path)
    with pytest.raises(
        ConfigError, match=r"data\.source\.text_column=body.*columns found: text, label"
    ):
        CsvFiles(tmp_path, text_column="body").load()
    with pytest.raises(ConfigError, match=r"data\.source\.label_column=sentiment"):
        CsvFiles(tmp_path, label_column="sentiment").load()


def test_csv_without_label_column_reads_texts_only(tmp_path):
    splits = CsvFiles(csv_folder(tmp_path), label_column=None).load()
    assert splits["train"].labels is None and not splits["train"].has_labels


def test_non_utf8_file_is_a_config_error_naming_it(tmp_path):
    csv_folder(tmp_path)
    (tmp_path / "validation.csv").write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"validation\.csv: not UTF-8"):
        CsvFiles(tmp_path).load()


def test_jsonl_reads_objects_and_stringifies_labels(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"text": "", "label": 0}])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "b", "label": 0, "extra": True}])
    splits = JsonlFiles(tmp_path).load()
    assert splits["train"].texts == ["a"] and splits["train"].labels == ["1"]
    assert splits["train"].stats["dropped_empty_text"] == 1
    assert splits["validation"].labels == ["0"]


def test_jsonl_missing_field_and_bad_line_fail_with_location(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"body": "a", "label": "x"}])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "b", "label": "x"}])
    with pytest.raises(ConfigError, match=r"text_column=text.*train\.jsonl:1.*columns found: body"):
        JsonlFiles(tmp_path).load()
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(ConfigError, match=r"train\.jsonl:2: not valid JSON"):
        JsonlFiles(tmp_path).load()


def test_text_files_are_one_text_per_split(tmp_path):
    (tmp_path / "train.txt").write_text("To be, or not to be.\n", encoding="utf-8")
    (tmp_path / "validation.txt").write_text("That is the question.\n", encoding="utf-8")
    splits = TextFiles(tmp_path).load()
    assert splits["train"].texts == ["To be, or not to be.\n"] and splits["train"].labels is None
    assert "test" not in splits


def test_missing_root_or_file_names_data_root(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root=.*no such folder"):
        TextFiles(tmp_path / "absent").load()
    (tmp_path / "train.txt").write_text("text")
    with pytest.raises(ConfigError, match=r"data\.root=.*validation\.txt not found"):
        TextFiles(tmp_path).load()
    (tmp_path / "validation.txt").write_text("text")
    with pytest.raises(ConfigError, match=r"data\.source\.test=test\.txt"):
        TextFiles(tmp_path, test="test.txt").load()


def test_csv_row_with_more_fields_than_the_header_is_dropped_and_counted(tmp_path, caplog):
    csv_folder(tmp_path)
    rows = "text,label\ngood film,pos\nbad,film,neg\nfine,pos,,\nawful,neg\n"
    (tmp_path / "train.csv").write_text(rows)  # rows 2, 3: an unquoted comma, a trailing one
    train = CsvFiles(tmp_path).load()["train"]
    assert train.texts == ["good film", "awful"] and train.labels == ["pos", "neg"]
    assert train.stats == {"read": 4, "dropped_empty_text": 0, "dropped_extra_fields": 2}
    assert "train.csv (row 2): 1 field(s) beyond the header" in caplog.text


def test_jsonl_labels_that_are_not_names_and_texts_that_are_not_strings_are_dropped(tmp_path):
    records = [
        {"text": "a", "label": ["x"]},  # would have become the class "['x']"
        {"text": "b", "label": True},  # ... "True"
        {"text": 7, "label": "x"},  # a number is no text
        {"text": {"t": "c"}, "label": "x"},
        {"text": "d", "label": 1},  # an integer class id is a name
        {"text": "e", "label": "y"},
    ]
    write_jsonl(tmp_path / "train.jsonl", records)
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "f", "label": "y"}])
    train = JsonlFiles(tmp_path).load()["train"]
    assert train.texts == ["d", "e"] and train.labels == ["1", "y"]
    dm = TextDataModule(JsonlFiles(tmp_path), CharTokenizer(), "classify")
    dm.setup()
    assert dm.label_names == ["1", "y"]  # no class "['x']" or "True"
    assert dm.stats["train/dropped_label_not_name"] == 2  # in the data report and metrics.json
    assert train.stats == {
        "read": 6,
        "dropped_empty_text": 0,
        "dropped_label_not_name": 2,
        "dropped_text_not_string": 2,
    }


def test_a_file_of_malformed_records_only_is_refused(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": False}, {"text": 1, "label": 2}])
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "f", "label": "y"}])
    with pytest.raises(
        ConfigError,
        match=r"train\.jsonl: no usable record \(1 label_not_name, 1 text_not_string; "
        r"first: .*train\.jsonl:1: label is bool False",
    ):
        JsonlFiles(tmp_path).load()
