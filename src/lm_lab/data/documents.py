"""Corpora of many files, read one document at a time, never whole.

A corpus is a list of `CorpusFile`s (found by `TextFiles.files()`, from stat alone) and the
documents each file holds (`TextFiles.documents(file)`): a text file (.txt, .md, .py, any suffix
allowed) is one document, a JSON-lines file (.jsonl, .jsonl.gz) one per line, a Parquet file one
per row. A file belongs to a split by its place (train.txt, train/...), or, when the corpus has
no validation split, each document is assigned by a hash of (seed, its name), which makes the
split deterministic, disjoint and independent of reading order. Unreadable files and bad records
are skipped and counted by reason; only an empty result is fatal (see `prepare`).
"""

import glob
import gzip
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_lab.data.pydoc_corpus import unit_hash
from lm_lab.data.split import Split
from lm_lab.utils.errors import ConfigError

SPLITS = ("train", "validation", "test")
SUFFIXES = (".txt", ".md", ".rst", ".py", ".jsonl", ".jsonl.gz", ".parquet")
VALIDATION_FOLDERS = ("validation", "valid", "val")


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus; `split` None means its documents are assigned by hash."""

    path: Path
    name: str  # relative to the root (or absolute): names documents and keys the cache
    split: str | None
    size: int
    mtime_ns: int


class Unreadable(Exception):
    """A file that cannot be read at all; `reason` is a short key counted in the data report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def suffix_of(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The longest allowed suffix the name ends with (.jsonl.gz before .gz), or None."""
    name = path.name.lower()
    found = [s for s in suffixes if name.endswith(s)]
    return max(found, key=len) if found else None


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise Unreadable("not_utf8", f"{path}: not UTF-8 (byte {err.start})") from err
    except OSError as err:
        raise Unreadable("unreadable", f"{path}: {err.strerror or err}") from err


class TextFiles:
    """The `data=text` source: a folder of files in one of four layouts (see docs/corpora.md).

    - `train.txt` + `validation.txt` [+ test]: one document per split file (the classic layout);
    - `train/` + `validation/` (or `valid/`, `val/`) [+ `test/`] subfolders, any depth;
    - any other folder: every file under it, documents held out by hash (`val_fraction`);
    - `train`/`validation`/`test` set explicitly: a file, folder or glob, relative to the root.
    Files whose suffix is not in `suffixes` are ignored and counted; hidden ones are ignored.
    """

    name = "text"

    def __init__(
        self,
        root: str | Path,
        train: str | None = None,
        validation: str | None = None,
        test: str | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        seed: int = 0,
        suffixes: tuple[str, ...] | list[str] = SUFFIXES,
        text_column: str = "text",
        exclude: tuple[str, ...] | list[str] = (),
    ) -> None:
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ConfigError(f"data.source.{key}={value}: must lie in [0, 1)")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"data.source.val_fraction + test_fraction = {val_fraction + test_fraction}: "
                "must be below 1 to leave training data; lower them"
            )
        self.root = Path(root).expanduser()
        self.names = {"train": train, "validation": validation, "test": test}
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.text_column = text_column
        self.exclude = tuple(exclude)  # folder names skipped anywhere (e.g. site-packages)
        self.ignored_files = 0  # files of other suffixes, counted by files()

    # ---- finding the files -----------------------------------------------------------------

    def files(self) -> list[CorpusFile]:
        """Every file of the corpus in a fixed order; fails with one line when none is found or
        a required split is missing."""
        if not self.root.is_dir():
            raise ConfigError(
                f"data.root={self.root}: no such folder; set data.root to the data folder"
            )
        self.ignored_files = 0
        layout = self._layout()
        hashed = "validation" not in layout  # then train's documents are assigned by hash
        found = [f for split, s in layout.items() for f in self._expand(split, s, hashed)]
        if not any(f.split in ("train", None) for f in found):
            spec = layout.get("train", ".")
            raise ConfigError(
                f"data.root={self.root}: no {'/'.join(self.suffixes)} files in {spec}; "
                "point data.root (or data.source.train) at the corpus"
            )
        if "validation" not in layout and self.val_fraction == 0:
            raise ConfigError(
                f"data.root={self.root}: no validation split; add validation files or set "
                "data.source.val_fraction above 0 to hold out documents"
            )
        return found

    def _layout(self) -> dict[str, str]:
        """Split -> file, folder or glob (relative to the root); train "." = the whole root with
        documents assigned by hash."""
        given = {split: name for split, name in self.names.items() if name is not None}
        if "train" in given:
            return given
        if (self.root / "train.txt").is_file():
            if "validation" not in given and not (self.root / "validation.txt").is_file():
                raise ConfigError(
                    f"data.root={self.root}: {self.root / 'validation.txt'} not found; put the "
                    "validation file there or set data.source.validation to its name"
                )
            return {"train": "train.txt", "validation": "validation.txt", **given}
        if (self.root / "train").is_dir():
            folders = [name for name in VALIDATION_FOLDERS if (self.root / name).is_dir()]
            found = {"validation": folders[0]} if folders else {}
            if (self.root / "test").is_dir():
                found["test"] = "test"
            return {"train": "train", **found, **given}
        return {"train": ".", **given}

    def _expand(self, split: str, spec: str, hashed: bool) -> list[CorpusFile]:
        """The files a spec names, sorted; `hashed`: train's documents are split by hash."""
        pattern = spec if Path(spec).is_absolute() else str(self.root / spec)
        if any(c in spec for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        elif Path(pattern).exists():
            matches = [Path(pattern)]
        else:
            raise ConfigError(
                f"data.source.{split}={spec}: not found in data.root={self.root}; "
                f"fix the name{' or set it to null' if split == 'test' else ''}"
            )
        paths = [p for m in matches for p in (self._walk(m) if m.is_dir() else [m])]
        assigned = None if hashed and split == "train" else split
        return [self._entry(path, assigned) for path in sorted(set(paths)) if self._wanted(path)]

    def _walk(self, folder: Path) -> Iterator[Path]:
        """Files under the folder; hidden and excluded folders are not even entered (the
        stdlib's site-packages can hold far more files than the stdlib itself)."""
        for parent, folders, names in os.walk(folder):
            folders[:] = [f for f in folders if not f.startswith(".") and f not in self.exclude]
            yield from (Path(parent) / name for name in names if not name.startswith("."))

    def _wanted(self, path: Path) -> bool:
        if suffix_of(path, self.suffixes) is None:
            self.ignored_files += 1
            return False
        return True

    def _entry(self, path: Path, split: str | None) -> CorpusFile:
        stat = path.stat()
        try:
            name = str(path.relative_to(self.root))
        except ValueError:  # a glob outside the root
            name = str(path.resolve())
        return CorpusFile(path, name, split, stat.st_size, stat.st_mtime_ns)

    def fingerprint(self) -> dict[str, Any]:
        """What shapes the prepared corpus besides the tokenizer (the files are listed apart)."""
        keys = ("val_fraction", "test_fraction", "seed", "suffixes", "text_column")
        return {"source": self.name, **{key: getattr(self, key) for key in keys}}

    # ---- reading documents -----------------------------------------------------------------

    def split_of(self, file: CorpusFile, doc_id: str) -> str:
        """The file's split, or by a hash of (seed, document name) when it has none."""
        if file.split is not None:
            return file.split
        u = unit_hash(doc_id, self.seed)
        if u < self.test_fraction:
            return "test"
        return "validation" if u < self.test_fraction + self.val_fraction else "train"

    def documents(self, file: CorpusFile, skipped: dict[str, int]) -> Iterator[tuple[str, str]]:
        """(split, text) of each non-empty document of the file; bad records and empty texts
        are counted in `skipped` by reason; a file that cannot be read raises Unreadable."""
        suffix = suffix_of(file.path, self.suffixes)
        if suffix in (".jsonl", ".jsonl.gz"):
            records = self._jsonl(file.path, skipped)
        elif suffix == ".parquet":
            records = self._parquet(file.path)
        else:
            records = iter([read_text(file.path)])
        for i, text in enumerate(records):
            if not isinstance(text, str):
                skipped["no_text"] = skipped.get("no_text", 0) + 1
            elif not text.strip():
                skipped["empty"] = skipped.get("empty", 0) + 1
            else:
                yield self.split_of(file, f"{file.name}:{i}"), text

    def _jsonl(self, path: Path, skipped: dict[str, int]) -> Iterator[Any]:
        """The text field of each line; undecodable or non-JSON lines are skipped and counted."""
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                for raw in f:
                    if not raw.strip():
                        continue
                    try:
                        record = json.loads(raw.decode("utf-8"))
                    except UnicodeDecodeError:
                        skipped["not_utf8_lines"] = skipped.get("not_utf8_lines", 0) + 1
                        continue
                    except json.JSONDecodeError:
                        skipped["bad_json_lines"] = skipped.get("bad_json_lines", 0) + 1
                        continue
                    yield record.get(self.text_column) if isinstance(record, dict) else None
        except (OSError, EOFError) as err:  # bad gzip, truncated file
            raise Unreadable("unreadable", f"{path}: {err}") from err

    def _parquet(self, path: Path) -> Iterator[Any]:
        import pyarrow.parquet as pq  # only Parquet corpora pay for the import

        try:
            table = pq.ParquetFile(path)
            if self.text_column not in table.schema_arrow.names:
                raise Unreadable("no_text_column", f"{path}: no column {self.text_column!r}")
            for batch in table.iter_batches(batch_size=1024, columns=[self.text_column]):
                yield from batch.column(0).to_pylist()
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise Unreadable("unreadable", f"{path}: {err}") from err

    def load(self) -> dict[str, Split]:
        """Every split in memory, for small corpora only (length probes, classification
        checks); training streams the files instead (see `prepare`)."""
        texts: dict[str, list[str]] = {}
        skipped: dict[str, int] = {}
        for file in self.files():
            try:
                for split, text in self.documents(file, skipped):
                    texts.setdefault(split, []).append(text)
            except Unreadable as err:
                skipped[err.reason] = skipped.get(err.reason, 0) + 1
        if "train" not in texts:
            raise ConfigError(f"data.root={self.root}: no readable training text found")
        return {
            split: Split(docs, None, origin=f"{self.root} ({split})", stats={"read": len(docs)})
            for split, docs in texts.items()
        }


class StdlibCode(TextFiles):
    """`data=pycode`: the source code of this Python's standard library (site-packages
    excluded), split by file. The same Python gives the same corpus on every machine."""

    name = "pycode"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("suffixes", (".py",))
        kwargs.setdefault("exclude", ("site-packages", "dist-packages", "__pycache__"))
        super().__init__(sysconfig.get_paths()["stdlib"], **kwargs)
