"""Instruction-tuning records: each format is told by its fields, every file source (JSON lines,
Parquet, a Hugging Face folder from `save_to_disk`) reads them, malformed records are counted by
reason, and a file without an assistant turn or without any usable record is one line."""

import json
from pathlib import Path

import pytest

from lm_lab.data.sources import JsonlFiles, ParquetFiles
from lm_lab.data.sources.conversations import BadRecord, Conversation, to_conversation
from lm_lab.data.sources.hf import HFDataset
from lm_lab.utils.errors import ConfigError

USER, REPLY = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
FORMATS = {
    "messages": ({"messages": [USER, REPLY]}, [USER, REPLY]),
    "prompt_response": ({"prompt": "hi", "response": "hello"}, [USER, REPLY]),
    "prompt_completion": ({"prompt": "hi", "completion": "hello"}, [USER, REPLY]),
    "prompt_completion_lists": ({"prompt": [USER], "completion": [REPLY]}, [USER, REPLY]),
    "alpaca": (
        {"instruction": "add", "input": "1 2", "output": "3"},
        [{"role": "user", "content": "add\n\n1 2"}, {"role": "assistant", "content": "3"}],
    ),
    "alpaca_no_input": (
        {"instruction": "add", "input": "", "output": "3"},
        [{"role": "user", "content": "add"}, {"role": "assistant", "content": "3"}],
    ),
    "system_field": (
        {"system": "be brief", "prompt": "hi", "response": "hello"},
        [{"role": "system", "content": "be brief"}, USER, REPLY],
    ),
}


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_is_detected_from_its_fields(name):
    record, messages = FORMATS[name]
    assert to_conversation(record) == Conversation(messages)


def test_the_kind_field_is_carried():
    assert to_conversation({"prompt": "q", "response": "a", "kind": "qa"}).kind == "qa"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "no format"}, "unknown_format"),
        ({"prompt": 3, "response": "a"}, "prompt_not_string"),
        ({"messages": []}, "messages_not_list"),
        ({"messages": [{"role": "user"}]}, "message_not_role_content"),
        ({"messages": [{"role": "user", "content": ["x"]}, REPLY]}, "content_not_string"),
    ],
)
def test_a_malformed_record_names_its_reason(record, reason):
    with pytest.raises(BadRecord) as bad:
        to_conversation(record)
    assert bad.value.reason == reason and not bad.value.fatal


def test_a_conversation_without_an_assistant_turn_is_fatal():
    with pytest.raises(BadRecord) as bad:
        to_conversation({"messages": [USER]})
    assert bad.value.fatal and bad.value.reason == "no_assistant_turn"


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


TRAIN = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(3)]
VALIDATION = [{"instruction": "v", "output": "w"}]


def test_jsonl_reads_conversations_and_counts_malformed_records(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [*TRAIN, {"oops": 1}, {"prompt": None, "response": ""}])
    write_jsonl(tmp_path / "validation.jsonl", VALIDATION)
    splits = JsonlFiles(tmp_path).load_conversations()
    assert [c.messages[1]["content"] for c in splits["train"]] == ["a0", "a1", "a2"]
    assert splits["train"].stats == {
        "read": 5,
        "dropped_unknown_format": 1,
        "dropped_prompt_not_string": 1,
    }
    assert splits["train"][0].where == f"{tmp_path / 'train.jsonl'}:1"
    assert "test" not in splits and len(splits["validation"]) == 1


def test_a_file_without_a_usable_record_is_one_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a"}, {"text": "b"}])
    write_jsonl(tmp_path / "validation.jsonl", VALIDATION)
    with pytest.raises(ConfigError, match=r"train.jsonl: no usable record \(2 unknown_format;"):
        JsonlFiles(tmp_path).load_conversations()


def test_a_record_without_an_assistant_turn_stops_the_read_naming_it(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [*TRAIN, {"messages": [USER]}])
    write_jsonl(tmp_path / "validation.jsonl", VALIDATION)
    with pytest.raises(ConfigError, match=r"train.jsonl:4: no assistant turn \(roles: user\)"):
        JsonlFiles(tmp_path).load_conversations()


def test_a_conversation_in_two_splits_is_refused(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "validation.jsonl", [{"messages": [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]}])  # fmt: skip
    with pytest.raises(ConfigError, match="in both the train and the validation split"):
        JsonlFiles(tmp_path).load_conversations()


def test_parquet_reads_conversations(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(TRAIN), tmp_path / "train.parquet")
    pq.write_table(pa.Table.from_pylist(VALIDATION), tmp_path / "validation.parquet")
    splits = ParquetFiles(tmp_path).load_conversations()
    assert splits["train"][2] == Conversation([
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}])  # fmt: skip
    assert splits["validation"][0].messages[0] == {"role": "user", "content": "v"}


def test_a_saved_hf_dataset_reads_conversations(tmp_path):
    datasets = pytest.importorskip("datasets")
    messages = [{"messages": [USER, REPLY]}, {"messages": [USER, {**REPLY, "content": "yo"}]}]
    data = datasets.DatasetDict(
        train=datasets.Dataset.from_list(messages), validation=datasets.Dataset.from_list(TRAIN)
    )
    data.save_to_disk(str(tmp_path / "saved"))
    source = HFDataset(
        str(tmp_path / "saved"), splits={"train": "train", "validation": "validation", "test": None}
    )
    splits = source.load_conversations()
    assert [c.messages for c in splits["train"]] == [
        [USER, REPLY],
        [USER, {**REPLY, "content": "yo"}],
    ]
    assert splits["validation"][0].messages[1]["content"] == "a0"


def test_an_empty_file_is_one_line(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n")
    write_jsonl(tmp_path / "validation.jsonl", VALIDATION)
    with pytest.raises(ConfigError, match="train.jsonl: no records; put one conversation a record"):
        JsonlFiles(tmp_path).load_conversations()
