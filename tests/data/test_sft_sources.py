"""The built-in instruction data: data=pydoc_sft (qa, summarize, classify from stdlib docstrings,
split by module) and the instruction versions of SST-2 and AG News."""

from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate

from lm_lab.data.sources import stdlib_docs
from lm_lab.data.sources.pydoc_instructions import (
    Doc,
    PydocInstructions,
    classify,
    first_sentence,
    qa,
    summarize,
)
from lm_lab.utils.errors import ConfigError

FAMILIES = sorted(stdlib_docs.FAMILIES)
DUMPS = """Serialize ``obj`` to a JSON formatted ``str``. If ``skipkeys`` is true then
``dict`` keys that are not basic types (e.g. tuples) will be skipped.

If ``ensure_ascii`` is false, then the return value can contain non-ASCII
characters."""
PEP257 = """Return the sum of a list.

The list may hold ints or floats.
An empty list sums to 0."""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> PydocInstructions:
    return PydocInstructions(cache_dir=tmp_path_factory.mktemp("pydoc_sft"))


@pytest.fixture(scope="module")
def built(source: PydocInstructions) -> dict:
    return source.load_conversations()


def test_qa_answers_with_the_first_sentence():
    conversation = qa(Doc("json.dumps", DUMPS, "data"), FAMILIES, 300)
    assert conversation.kind == "qa"
    assert conversation.messages[0] == {"role": "user", "content": "What does `json.dumps` do?"}
    assert conversation.messages[1] == {
        "role": "assistant",
        "content": "Serialize ``obj`` to a JSON formatted ``str``.",
    }
    # no sentence end inside the paragraph: all of it, its lines joined; "e.g. zip" goes on
    assert first_sentence("Make an archive (eg. zip or tar)\nof a folder") == (
        "Make an archive (eg. zip or tar) of a folder"
    )


def test_summarize_drops_the_first_line_and_answers_with_it():
    conversation = summarize(Doc("m.total", PEP257, "numeric"), FAMILIES, 300)
    prompt, answer = (m["content"] for m in conversation.messages)
    assert answer == "Return the sum of a list."
    assert prompt.endswith("\n\nThe list may hold ints or floats.\nAn empty list sums to 0.")
    assert "Return the sum" not in prompt and conversation.kind == "summarize"
    # a summary wrapped over two lines is no summary line: no pair
    assert summarize(Doc("json.dumps", DUMPS, "data"), FAMILIES, 300) is None


def test_classify_answers_with_the_family_and_lists_the_choices():
    conversation = classify(Doc("m.total", PEP257, "numeric"), FAMILIES, 300)
    prompt, answer = (m["content"] for m in conversation.messages)
    assert answer == "numeric" and conversation.kind == "classify"
    assert PEP257 in prompt and prompt.endswith(f"Answer with one of: {', '.join(FAMILIES)}.")


def test_signature_lines_and_long_answers_give_no_pair():
    signature = Doc("builtins.bytearray.count", "B.count(sub[, start]) -> int\n\nCount.", "types")
    assert all(make(signature, FAMILIES, 300) is None for make in (qa, summarize, classify))
    assert qa(Doc("json.dumps", DUMPS, "data"), FAMILIES, 20) is None  # answer over 20 chars


def test_every_kind_in_every_split_within_the_sizes(built):
    sizes = {"train": 1500, "validation": 150, "test": 150}
    for name, conversations in built.items():
        kinds = Counter(c.kind for c in conversations)
        assert kinds == {k: sizes[name] // 3 for k in ("qa", "summarize", "classify")}, name
        assert all([m["role"] for m in c.messages] == ["user", "assistant"] for c in conversations)


def test_no_module_in_two_splits(source, built):
    docs = source.split_docs(source.docs())
    modules = {name: {doc.module for doc in split} for name, split in docs.items()}
    assert all(modules.values())
    assert not modules["train"] & modules["validation"]
    assert not modules["train"] & modules["test"] and not modules["validation"] & modules["test"]
    # the built data: each qa question names its origin, whose module belongs to that split
    for name, conversations in built.items():
        asked = {
            c.messages[0]["content"].split("`")[1].split(".")[0]
            for c in conversations
            if c.kind == "qa"
        }
        assert asked <= modules[name], name


def test_same_seed_same_data_other_seed_other_split(source, built, tmp_path):
    again = PydocInstructions(cache_dir=tmp_path).load_conversations()  # collected anew
    assert again == built
    other = PydocInstructions(seed=1, cache_dir=source.cache_dir).load_conversations()
    assert other["test"] != built["test"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kinds": ["qa", "poem"]}, "data.source.kinds"),
        ({"test_size": 2}, "data.source.test_size=2"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
    ],
)
def test_bad_settings_are_one_line(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        PydocInstructions(cache_dir=tmp_path, **overrides)


@pytest.mark.parametrize(
    ("data", "labels"),
    [
        ("sst2_sft", ["negative", "positive"]),
        ("ag_news_sft", ["Business", "Sci/Tech", "Sports", "World"]),
    ],
)
def test_shared_sets_as_instructions(data, labels, compose, shared_data):
    shared_data(data.removesuffix("_sft"))
    splits = instantiate(compose(f"data={data}").data.source).load_conversations()
    assert set(splits) == {"train", "validation", "test"}
    first = splits["test"][0]
    assert first.kind == "classify" and first.messages[1]["content"] in labels
    assert first.messages[0]["content"].endswith(f"Answer with one of: {', '.join(labels)}.")
    assert {c.messages[1]["content"] for c in splits["train"]} == set(labels)


def test_shared_sets_need_their_folder(compose, tmp_path):
    cfg = compose("data=sst2_sft", f"data.root={tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match="no such folder"):
        instantiate(cfg.data.source).load_conversations()


def test_label_instructions_need_two_labels(compose, tmp_path: Path):
    for split in ("train", "validation"):
        (tmp_path / f"{split}.csv").write_text("text,label\na film,good\nanother,good\n")
    cfg = compose("data=sst2_sft", f"data.root={tmp_path}")
    with pytest.raises(ConfigError, match="at least 2 labels"):
        instantiate(cfg.data.source).load_conversations()
