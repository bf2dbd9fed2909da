"""task=sft batches: conversations shifted into (input_ids, targets), packed whole into rows
(never split), the padding packing saves counted, and the datamodule's stats and errors."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.data.loaders.instructions import (
    IGNORE,
    PAD_SEGMENT,
    Example,
    collate,
    pack,
    padding_stats,
)
from lm_lab.utils.errors import ConfigError


def test_best_fit_packing_on_a_hand_made_set():
    rows = pack([5, 3, 4, 2, 6], capacity=8)
    assert rows == [[4, 3], [0, 1], [2]]  # 6+2, 5+3, 4: longest first, tightest row


def test_padding_saved_on_a_hand_made_set():
    lengths = [5, 3, 4, 2, 6]
    stats = padding_stats(lengths, pack(lengths, 8), 8)
    # one per row: 5 rows x 8 = 40 slots for 20 tokens; packed: 3 rows, 24 slots, 4 padding
    assert stats == pytest.approx(
        {"pad_fraction_unpacked": 0.5, "pad_fraction_packed": 4 / 24, "padding_saved": 0.8}
    )


def example(ids: list[int], targets: list[int]) -> Example:
    return Example(torch.tensor(ids), torch.tensor(targets))


def test_a_packed_batch_numbers_each_conversation_and_pads_the_rest():
    rows = [
        [example([5, 6], [IGNORE, 7]), example([8], [9])],
        [example([1, 2, 3, 4], [2, 3, 4, 5])],
    ]
    batch = collate(rows, pad_id=0, packed=True)
    assert batch["input_ids"].tolist() == [[5, 6, 8, 0], [1, 2, 3, 4]]
    assert batch["targets"].tolist() == [[IGNORE, 7, 9, IGNORE], [2, 3, 4, 5]]
    assert batch["segments"].tolist() == [[0, 0, 1, PAD_SEGMENT], [0, 0, 0, 0]]
    assert "segments" not in collate([[rows[0][0]]], pad_id=0, packed=False)


def write_data(root: Path, n_train: int = 24) -> Path:
    root.mkdir()
    for split, first, n in (("train", 0, n_train), ("validation", 100, 6)):
        lines = [
            json.dumps({"prompt": f"question {i}", "response": "yes" * (1 + i % 3)})
            for i in range(first, first + n)
        ]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def datamodule(compose, root: Path | None, *overrides: str):
    at = [f"data.root={root}"] if root else []
    cfg = compose("task=sft", "data=jsonl", *at, "tokenizer=char", *overrides)
    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    dm.setup("fit")
    return dm


def test_packing_keeps_every_conversation_whole_and_reports_the_saving(compose, tmp_path):
    dm = datamodule(compose, write_data(tmp_path / "d"), "data.max_length=128", "data.packing=true")
    train = dm._datasets["train"]
    assert sorted(i for row in train.rows for i in row) == list(range(24))  # each once, whole
    assert all(train.row_length(r) <= 128 for r in range(len(train)))
    assert len(train) < 24 and dm.stats["train/padding_saved"] > 0.5
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 128 and batch["segments"].max() >= 1


def test_unpacked_rows_hold_one_conversation_and_score_the_reply_only(compose, tmp_path):
    dm = datamodule(compose, write_data(tmp_path / "d"))
    batch = next(iter(dm.val_dataloader()))
    tok = dm.tokenizer
    for ids, targets in zip(batch["input_ids"], batch["targets"], strict=True):
        reply = tok.decode(targets[targets != IGNORE].tolist())
        assert reply.startswith("yes") and reply.endswith("<|end|>\n")  # the plain template's end
        assert tok.decode(ids.tolist()).startswith("### User:\nquestion 10")
    assert dm.stats["train/examples"] == 24 and dm.stats["validation/scored_tokens"] > 0


def test_too_long_conversations_are_skipped_and_counted(compose, tmp_path):
    dm = datamodule(compose, write_data(tmp_path / "d"), "data.max_length=52")
    assert dm.stats["train/too_long"] == 8  # "yes" x 3 (one in three) does not fit
    assert dm.stats["train/examples"] == 24 - dm.stats["train/too_long"]


def test_nothing_left_after_skipping_is_one_line(compose, tmp_path):
    with pytest.raises(
        ConfigError, match="no conversation of the train split fits data.max_length=8"
    ):
        datamodule(compose, write_data(tmp_path / "d"), "data.max_length=8")


def test_cut_keeps_every_conversation(compose, tmp_path):
    dm = datamodule(
        compose, write_data(tmp_path / "d"), "data.max_length=24", "data.truncation=cut"
    )
    assert dm.stats["train/examples"] == 24 and dm.stats["train/too_long"] == 24
    assert all(len(e) == 24 for e in dm._datasets["train"].examples)


def test_a_source_without_conversations_is_one_line(compose, tmp_path):
    with pytest.raises(
        ConfigError, match="task=sft needs conversations: data=pydoc has none; use data=jsonl"
    ):
        datamodule(compose, None, "data=pydoc")


def test_classification_records_are_no_conversations(compose, planted_csv):
    with pytest.raises(ConfigError, match=r"train.csv: no usable record \(24 unknown_format;"):
        datamodule(compose, planted_csv, "data=csv")


def test_each_target_is_the_next_input_token(compose, tmp_path):
    dm = datamodule(compose, write_data(tmp_path / "d"))
    for example in dm._datasets["train"].examples:
        ids, targets = example.input_ids.tolist(), example.targets.tolist()
        scored = [t for t in range(len(ids) - 1) if targets[t] != IGNORE]
        assert scored and all(targets[t] == ids[t + 1] for t in scored)
        assert targets[-1] == dm.tokenizer.encode("\n")[0]  # the end text's last character
