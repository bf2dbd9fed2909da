"""Record sources (CSV, JSON lines, Parquet): `load() -> {"train": Split, "validation": Split[,
"test": Split]}` from a folder (`data.root`) holding one file per split; the test file is
optional and, when absent, the datamodule tests on validation and says so.

The same files serve instruction tuning: `load_conversations()` reads whole records as
conversations (`conversations.to_conversation` tells the format by the fields), so
`data=jsonl` is labelled texts for task=classify and conversations for task=sft.
"""

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lm_lab.data.sources.conversations import (
    BadRecord,
    Conversation,
    check_splits_disjoint,
    to_conversation,
)
from lm_lab.data.sources.split import Split, check_disjoint
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)
Row = tuple[str, dict[str, Any]]  # (location for messages, e.g. "file.jsonl:12", the record)


def split_files(root: str | Path, names: dict[str, str | None]) -> dict[str, Path]:
    """Paths of the splits named in `names`; train and validation must exist, test may not;
    no file may serve two splits."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"data.root={root}: no such folder; set data.root to the data folder")
    paths = {}
    for split, name in names.items():
        if name is None:
            continue
        path = folder / name
        if path.is_file():
            paths[split] = path
        elif split != "test":
            raise ConfigError(
                f"data.root={root}: {path} not found; put the {split} file there "
                f"or set data.source.{split} to its name"
            )
    check_disjoint(
        {split: [path.resolve()] for split, path in paths.items()},
        lambda first, second, path: (
            f"data.source.{second}={names[second]}: {path} is already the {first} split's file; "
            f"a document may be in one split only, so give the {second} split its own file"
        ),
    )
    return paths


def read_utf8(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # newline="": keep \r\n as is
            return f.read()
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); re-save the file as UTF-8"
        ) from err


class RecordFiles:
    """Shared logic of the CSV and JSON-lines sources: one record per example, a text column and
    an optional label column (None reads the texts only, e.g. for language modelling). File
    names default to <split><suffix>; the test file is used when it exists."""

    name = "records"
    suffix = ""

    def __init__(
        self,
        root: str | Path,
        text_column: str = "text",
        label_column: str | None = "label",
        train: str | None = None,
        validation: str | None = None,
        test: str | None = None,
    ) -> None:
        self.root = root
        self.text_column = text_column
        self.label_column = label_column
        self.names = {
            "train": train or f"train{self.suffix}",
            "validation": validation or f"validation{self.suffix}",
            "test": test or f"test{self.suffix}",
        }

    def load(self) -> dict[str, Split]:
        paths = split_files(self.root, self.names)
        return {split: self.to_split(path, self.rows(path)) for split, path in paths.items()}

    def load_conversations(self) -> dict[str, "Conversations"]:
        """Every split's records as conversations (task=sft); no conversation in two splits."""
        paths = split_files(self.root, self.names)
        splits = {split: read_conversations(path, self.rows(path)) for split, path in paths.items()}
        check_splits_disjoint(splits, str(self.root))
        return splits

    def rows(self, path: Path) -> Iterable[Row]:
        raise NotImplementedError

    def check_columns(self, where: str, columns: Iterable[Any]) -> None:
        """Fail on the first record (or header) that lacks a configured column."""
        columns = [c for c in columns if c is not None]
        wanted = [("text_column", self.text_column), ("label_column", self.label_column)]
        for key, column in wanted:
            if column is not None and column not in columns:
                raise ConfigError(
                    f"data.source.{key}={column}: no such column in {where}; "
                    f"columns found: {', '.join(map(str, columns)) or 'none'}"
                )

    def to_split(self, path: Path | str, rows: Iterable[Row]) -> Split:
        """Texts and labels; empty or whitespace-only texts are dropped and counted, an empty
        label becomes None (usable for language modelling, dropped by classification).
        Malformed records (see `malformed`) are dropped and counted by reason, and the first of
        each reason is named in a warning; a file with nothing else is refused."""
        texts: list[str] = []
        labels: list[str | None] = []
        stats = {"read": 0, "dropped_empty_text": 0}
        first: dict[str, str] = {}  # reason -> "where: what", its first occurrence
        for where, record in rows:
            stats["read"] += 1
            self.check_columns(where, record)
            reason, what = self.malformed(record)
            if reason:
                stats[f"dropped_{reason}"] = stats.get(f"dropped_{reason}", 0) + 1
                first.setdefault(reason, f"{where}: {what}")
                continue
            text = record[self.text_column]
            if text is None or not text.strip():
                stats["dropped_empty_text"] += 1
                continue
            texts.append(text)
            if self.label_column is not None:
                label = record[self.label_column]
                labels.append(None if label is None or str(label).strip() == "" else str(label))
        self._report_malformed(path, stats, first, kept=len(texts))
        has_labels = self.label_column is not None
        return Split(texts, labels if has_labels else None, origin=str(path), stats=stats)

    def malformed(self, record: dict[Any, Any]) -> tuple[str | None, str]:
        """(reason, what) when a record cannot be read as meant, else (None, ""): a CSV row with
        more fields than the header (csv puts the rest under the key None), a text that is not
        a string, a label that is not a name or an integer id (str() would turn a list or a
        bool into a class such as "['a']" or "True")."""
        if record.get(None):
            return "extra_fields", f"{len(record[None])} field(s) beyond the header"
        text = record[self.text_column]
        if text is not None and not isinstance(text, str):
            return "text_not_string", f"text is {type(text).__name__} {text!r:.40}"
        label = None if self.label_column is None else record[self.label_column]
        if label is not None and (isinstance(label, bool) or not isinstance(label, str | int)):
            return "label_not_name", f"label is {type(label).__name__} {label!r:.40}"
        return None, ""

    @staticmethod
    def _report_malformed(
        path: Path | str, stats: dict[str, int], first: dict[str, str], kept: int
    ) -> None:
        report_malformed(path, stats, first, kept)


def report_malformed(
    path: Path | str,
    stats: dict[str, int],
    first: dict[str, str],
    kept: int,
    fix: str = "fix the file",
) -> None:
    """One warning naming each reason's count and first record; a file with nothing kept is
    refused in one line."""
    if not first:
        return
    counts = ", ".join(f"{stats[f'dropped_{reason}']} {reason}" for reason in first)
    firsts = "; ".join(first.values())
    if kept == 0:
        raise ConfigError(f"{path}: no usable record ({counts}; first: {firsts}); {fix}")
    log.warning(f"{path}: dropped malformed records ({counts}); first: {firsts}")


class Conversations(list[Conversation]):
    """One split's conversations (a list), with where they came from and the reading's counts
    ("read", "dropped_<reason>"), which the datamodule adds to its stats."""

    def __init__(self, items: Iterable[Conversation], origin: str, stats: dict[str, int]) -> None:
        super().__init__(items)
        self.origin, self.stats = origin, stats


def read_conversations(path: Path | str, rows: Iterable[Row]) -> Conversations:
    """Every readable conversation of one file. Malformed records are dropped and counted by
    reason; a fatal one (no assistant turn) stops the run, naming where it is."""
    conversations: list[Conversation] = []
    stats, first = {"read": 0}, {}
    for where, record in rows:
        stats["read"] += 1
        try:
            conversations.append(to_conversation(record, where))
        except BadRecord as bad:
            if bad.fatal:
                raise ConfigError(f"{where}: {bad.what}; {bad.fix}") from None
            stats[f"dropped_{bad.reason}"] = stats.get(f"dropped_{bad.reason}", 0) + 1
            first.setdefault(bad.reason, f"{where}: {bad.what}")
    report_malformed(path, stats, first, len(conversations), "see docs/instruction_tuning.md")
    if not conversations:
        raise ConfigError(f"{path}: no records; put one conversation a record in it")
    return Conversations(conversations, str(path), stats)


class CsvFiles(RecordFiles):
    """CSV files with a header row (train.csv, validation.csv, optional test.csv)."""

    name = "csv"
    suffix = ".csv"

    def rows(self, path: Path) -> Iterator[Row]:
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long texts are fine
        try:
            with path.open(encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise ConfigError(f"{path}: empty file; it needs a header row, e.g. text,label")
                self.check_columns(f"{path} (header)", reader.fieldnames)
                row = 0
                for row, record in enumerate(reader, start=1):
                    yield f"{path} (row {row})", record
                if row == 0:
                    raise ConfigError(f"{path}: a header but no rows; add examples below it")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); re-save it as UTF-8"
            ) from err
        except csv.Error as err:
            raise ConfigError(f"{path}: not valid CSV ({err}); check its quoting") from err


class JsonlFiles(RecordFiles):
    """JSON-lines files: one object per line (train.jsonl, validation.jsonl, optional test)."""

    name = "jsonl"
    suffix = ".jsonl"

    def rows(self, path: Path) -> Iterator[Row]:
        for line, raw in enumerate(read_utf8(path).splitlines(), start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line}"
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ConfigError(
                    f"{where}: not valid JSON ({err.msg}); one object per line"
                ) from err
            if not isinstance(record, dict):
                raise ConfigError(f'{where}: expected a JSON object like {{"text": ...}} per line')
            yield where, record


class ParquetFiles(RecordFiles):
    """Parquet files, one row a record (train.parquet, validation.parquet, optional test),
    read with pyarrow: the format data sets are shared in on the Hub."""

    name = "parquet"
    suffix = ".parquet"

    def rows(self, path: Path) -> Iterator[Row]:
        import pyarrow.parquet as pq  # only for data=parquet

        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... on a bad file
            raise ConfigError(f"{path}: not a Parquet file ({err}); write it with pyarrow") from err
        for row, record in enumerate(table.to_pylist(), start=1):  # to_split checks columns
            yield f"{path} (row {row})", record
