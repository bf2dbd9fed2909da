"""`HFDataset`: any data set Hugging Face `datasets` can load, as lm_lab splits.

`path` is `load_dataset`'s first argument: a hub name (needs network), a local folder, or a
builder (`csv`, `json`, `text`, `parquet`) given `data_files`. Columns and split names are
configurable; ClassLabel integers become their names, so labels read the same as in CSV files.
A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is read with
`load_from_disk`. For task=sft, `load_conversations()` reads whole rows as conversations.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_lab.data.sources.conversations import check_splits_disjoint
from lm_lab.data.sources.records import Conversations, RecordFiles, Row, read_conversations
from lm_lab.data.sources.split import Split, check_disjoint
from lm_lab.utils.errors import ConfigError

REQUIRED = ("train", "validation")  # splits a run cannot do without; test falls back to validation


class HFDataset(RecordFiles):
    """Reuses RecordFiles' column checks and empty-text handling on the rows of each split."""

    name = "hf"

    def __init__(
        self,
        path: str,
        name: str | None = None,
        data_files: Any = None,
        text_column: str = "text",
        label_column: str | None = "label",
        splits: dict[str, str | None] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(path, text_column, label_column)
        self.config_name, self.data_files, self.cache_dir = name, data_files, cache_dir
        self.names = dict(splits or {"train": "train", "validation": "validation", "test": "test"})

    def load(self) -> dict[str, Split]:
        return {
            ours: self.to_split(f"{self.root}[{theirs}]", self._rows(split))
            for ours, theirs, split in self._splits()
        }

    def load_conversations(self) -> dict[str, Conversations]:
        splits = {
            ours: read_conversations(f"{self.root}[{theirs}]", self._records(split))
            for ours, theirs, split in self._splits()
        }
        check_splits_disjoint(splits, str(self.root))
        return splits

    def _splits(self) -> Iterator[tuple[str, str, Any]]:
        """(our split name, the data set's, the split) for each split the data set has."""
        self._check_disjoint()
        data = self._load_dataset()
        for ours, theirs in self.names.items():
            if theirs is not None and theirs in data:
                yield ours, theirs, data[theirs]
            elif ours in REQUIRED:
                raise ConfigError(
                    f"data.source.splits.{ours}={theirs}: {self.root} has no such split; "
                    f"it has {', '.join(data)}"
                )

    def _check_disjoint(self) -> None:
        """No split of the data set, and no file of `data_files`, may serve two of ours."""
        check_disjoint(
            {ours: [theirs] for ours, theirs in self.names.items() if theirs is not None},
            lambda first, second, theirs: (
                f"data.source.splits.{second}={theirs}: already data.source.splits.{first}; a "
                f"document may be in one split only, so map {second} to another split (or null)"
            ),
        )
        files = self.data_files if isinstance(self.data_files, dict) else {}
        listed = {s: [f] if isinstance(f, str) else list(f) for s, f in files.items()}
        check_disjoint(
            {s: [str(Path(f).resolve()) for f in fs] for s, fs in listed.items()},
            lambda first, second, path: (
                f"data.source.data_files: {path} is listed for both {first} and {second}; a "
                "document may be in one split only, so list each file under one split"
            ),
        )

    def _load_dataset(self) -> Any:
        from datasets import load_dataset, load_from_disk  # heavy import, only for data=hf

        try:
            if (Path(self.root) / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk
                return load_from_disk(self.root)
            data = load_dataset(
                self.root, self.config_name, data_files=self.data_files, cache_dir=self.cache_dir
            )
        except (FileNotFoundError, ValueError, ConnectionError) as err:
            raise ConfigError(
                f"data.root={self.root}: datasets cannot load it ({str(err).splitlines()[0]}); "
                "give a local folder, or a builder (csv|json|text) with data.source.data_files"
            ) from err
        return data

    def _rows(self, split: Any) -> Iterator[Row]:
        """Records with ClassLabel ids turned into names (-1, no label, becomes None)."""
        self.check_columns(f"{self.root} (columns)", split.column_names)
        feature = split.features.get(self.label_column) if self.label_column else None
        names = getattr(feature, "names", None)
        for where, record in self._records(split):
            if names is not None:
                label = record[self.label_column]
                record[self.label_column] = (
                    names[label] if label is not None and label >= 0 else None
                )
            yield where, record

    def _records(self, split: Any) -> Iterator[Row]:
        for i, record in enumerate(split):
            yield f"{self.root} (row {i})", record
