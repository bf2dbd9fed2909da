"""No document in two splits, for every source: held-out folders, files and globs are left out
of a train split found by layout, and two splits the user named that share a file are refused."""

import json
from pathlib import Path

import pytest

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.preparation.prepare import prepare
from lm_lab.data.sources import CsvFiles, JsonlFiles
from lm_lab.data.sources.documents import TextFiles
from lm_lab.data.sources.hf import HFDataset
from lm_lab.data.sources.split import Split, drop_seen_in_evaluation
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.utils.errors import ConfigError


def write(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"the text of {name}\n", encoding="utf-8")


def names_by_split(source: TextFiles) -> dict[str, list[str]]:
    """Split -> names of the files it reads (a hashed train file counts as train)."""
    out: dict[str, list[str]] = {}
    for file in source.files():
        out.setdefault(file.split or "train", []).append(file.name)
    return out


A1_A6 = [f"a{i}.txt" for i in range(1, 7)]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_a_held_out_folder_is_not_walked_into_train(tmp_path, split):
    """The issue's case: `validation=heldout` without `train=` put heldout/t1.txt in both."""
    write(tmp_path, *A1_A6, "heldout/t1.txt")
    found = names_by_split(TextFiles(tmp_path, **{split: "heldout"}))
    assert found == {"train": A1_A6, split: ["heldout/t1.txt"]}


def test_held_out_files_and_globs_are_not_in_train_either(tmp_path):
    write(tmp_path, *A1_A6, "eval/v1.md", "eval/v2.md", "t.txt")
    found = names_by_split(TextFiles(tmp_path, validation="eval/*.md", test="t.txt"))
    assert found == {"train": A1_A6, "validation": ["eval/v1.md", "eval/v2.md"], "test": ["t.txt"]}


def test_a_held_out_folder_inside_train_is_left_out_of_train(tmp_path):
    write(tmp_path, "train/x.txt", "train/held/y.txt")
    found = names_by_split(TextFiles(tmp_path, validation="train/held"))
    assert found == {"train": ["train/x.txt"], "validation": ["train/held/y.txt"]}


def test_a_link_to_a_validation_file_is_that_file(tmp_path):
    write(tmp_path, "train/x.txt", "validation/v.txt")
    (tmp_path / "train" / "v_again.txt").symlink_to(tmp_path / "validation" / "v.txt")
    (tmp_path / "train" / "v_hard.txt").hardlink_to(tmp_path / "validation" / "v.txt")
    (tmp_path / "train" / "x_again.txt").symlink_to(tmp_path / "train" / "x.txt")  # read once
    found = names_by_split(TextFiles(tmp_path))
    assert found == {"train": ["train/x.txt"], "validation": ["validation/v.txt"]}


def test_prepared_splits_hold_each_document_once(tmp_path):
    write(tmp_path, *A1_A6, "heldout/t1.txt")
    stats = prepare(TextFiles(tmp_path, validation="heldout"), CharTokenizer(), None).stats()
    assert (stats["train/documents"], stats["validation/documents"]) == (6, 1)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            {"train": "**/*.txt", "validation": "heldout/*.txt"},
            r"^data\.source\.validation=heldout/\*\.txt: .*heldout/t1\.txt is also in the "
            r"train split \(data\.source\.train=\*\*/\*\.txt\); a document may be in one split",
        ),
        (
            {"test": "validation.txt"},  # the classic layout finds train.txt and validation.txt
            r"^data\.source\.test=validation\.txt: .*validation\.txt is also in the validation "
            r"split \(data\.source\.validation=validation\.txt\)",
        ),
    ],
)
def test_two_named_splits_that_share_a_file_are_refused(tmp_path, names, message):
    write(tmp_path, *A1_A6, "heldout/t1.txt", "train.txt", "validation.txt")
    with pytest.raises(ConfigError, match=message):
        TextFiles(tmp_path, **names).files()


@pytest.mark.parametrize(
    ("source", "names", "message"),
    [
        (
            CsvFiles,
            {"validation": "train.csv"},
            r"^data\.source\.validation=train\.csv: .*train\.csv is already the train split's "
            r"file; a document may be in one split only",
        ),
        (
            JsonlFiles,
            {"test": "validation.jsonl"},
            r"^data\.source\.test=validation\.jsonl: .*validation\.jsonl is already the "
            r"validation split's file",
        ),
    ],
)
def test_record_files_named_for_two_splits_are_refused(tmp_path, source, names, message):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "validation.csv").write_text("text,label\nc,x\n")
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "a", "label": "x"}) + "\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps({"text": "c", "label": "x"}) + "\n")
    with pytest.raises(ConfigError, match=message):
        source(tmp_path, **names).load()


def test_hf_splits_and_data_files_serving_two_splits_are_refused(tmp_path):
    """Refused before `datasets` is even imported."""
    two_names = HFDataset("csv", splits={"train": "train", "validation": "dev", "test": "dev"})
    with pytest.raises(ConfigError, match=r"^data\.source\.splits\.test=dev: already data\."):
        two_names.load()
    files = {"train": str(tmp_path / "a.csv"), "validation": [str(tmp_path / "a.csv")]}
    with pytest.raises(ConfigError, match=r"^data\.source\.data_files: .*a\.csv is listed for "):
        HFDataset("csv", data_files=files).load()


def test_a_text_in_train_and_an_evaluation_split_leaves_train_only():
    splits = {
        "train": Split(["A cat.", "a  CAT.", "a dog.", "the bird"], ["p", "p", "n", "n"]),
        "validation": Split(["the bird", "an owl"], ["n", "p"]),
        "test": Split(["a cat.", "an owl", "a fish"], ["p", "p", "n"]),
    }
    kept = drop_seen_in_evaluation(splits)
    assert kept["train"].texts == ["a dog."] and kept["train"].labels == ["n"]
    assert kept["train"].stats == {"dropped_in_test": 2, "dropped_in_validation": 1}
    assert kept["validation"].texts == ["the bird"] and kept["validation"].labels == ["n"]
    assert kept["validation"].stats == {"dropped_in_test": 1}
    assert kept["test"] is splits["test"]  # the scored split stays whole


def test_the_datamodule_trains_on_no_text_it_tests_on(tmp_path):
    """A CSV source whose test repeats two training rows: the datamodule drops them from train
    and says so; the TF-IDF baseline reads the same examples."""
    rows = {"train": ["x a", "x b", "y c", "y d", "y e"], "validation": ["x f", "y g"]}
    rows["test"] = ["x a", "Y  C", "x h"]
    for split, texts in rows.items():
        lines = ["text,label", *(f"{t},{t.split()[0].lower()}" for t in texts)]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dm = TextDataModule(CsvFiles(tmp_path), CharTokenizer(), "classify", batch_size=2)
    dm.setup()
    assert dm.stats["train/dropped_in_test"] == 2 and dm.stats["train/examples"] == 3
    assert dm.texts_and_labels("train")[0] == ["x b", "y d", "y e"]


def test_the_shared_data_sets_lose_their_evaluation_texts_from_train():
    """10 rows of the shared AG News train are test texts and 1 a validation text (casefolded,
    spacing collapsed; counted apart with a set); 1 SST-2 training row is a test text."""
    data = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    for name, expected in (("ag_news", (10, 1)), ("sst2", (1, None))):
        stats = drop_seen_in_evaluation(CsvFiles(data / name).load())["train"].stats
        assert (stats.get("dropped_in_test"), stats.get("dropped_in_validation")) == expected
