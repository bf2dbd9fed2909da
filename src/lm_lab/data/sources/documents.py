"""Corpora of many files, read one document at a time, never whole.

A corpus is a list of `CorpusFile`s (found by `TextFiles.files()`, from stat alone) and the
documents each file holds: a text file (.txt, .md, .py, any suffix allowed) is one document, a
JSON-lines file (.jsonl, .jsonl.gz) one per line, a Parquet file one per row. A file belongs to a
split by its place (train.txt, train/...), or, when the corpus has no validation split, each
document is assigned by a hash of (seed, its name), which makes the split deterministic, disjoint
and independent of reading order. No file is in two splits (`files()` checks it). Unreadable
files, broken symlinks and bad records are skipped and counted by reason; only an empty result is
fatal (see `prepare`).

Documents reach the tokenizer as *pieces* (`TextFiles.pieces(file)`) of at most `PIECE_CHARS`
characters, cut where byte-level BPE would split anyway (`cut_point`), and a text file larger
than that is read a piece at a time: one 160 MB `train.txt` costs the memory of a few pieces,
not of the whole file (and of its copies inside the tokenizer).
"""

import codecs
import glob
import gzip
import hashlib
import itertools
import json
import os
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_lab.data.sources.pydoc_corpus import unit_hash
from lm_lab.data.sources.split import Split, check_disjoint
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

SPLITS = ("train", "validation", "test")
SUFFIXES = (".txt", ".md", ".rst", ".py", ".jsonl", ".jsonl.gz", ".parquet")
VALIDATION_FOLDERS = ("validation", "valid", "val")
PIECE_CHARS = 250_000  # longest text the tokenizer gets at once: bounds its memory (results.md)
READ_BYTES = 1 << 20  # block size of the streaming UTF-8 check
Piece = tuple[str, str, bool]  # (split, text, whether it starts a document)


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus; `split` None means its documents are assigned by hash."""

    path: Path
    name: str  # relative to the root (or absolute): names documents and keys the cache
    split: str | None
    size: int
    identity: tuple[int, int] = (0, 0)  # (device, inode): one file under two names or links


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


def check_utf8(path: Path) -> None:
    """Raises Unreadable unless the whole file is UTF-8, reading it block by block: a streamed
    document must fail before its first piece reaches the shards, not half-way through."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes before the current block
    try:
        with path.open("rb") as f:
            while block := f.read(READ_BYTES):
                held = len(decoder.getstate()[0])  # an incomplete character of the last block
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as err:
                    byte = offset - held + err.start
                    raise Unreadable("not_utf8", f"{path}: not UTF-8 (byte {byte})") from err
                offset += len(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as err:  # the file ends inside a character
        raise Unreadable("not_utf8", f"{path}: not UTF-8 (byte {offset})") from err
    except OSError as err:
        raise Unreadable("unreadable", f"{path}: {err.strerror or err}") from err


def cut_point(text: str, limit: int) -> int:
    """Where to end the first piece of a text longer than `limit`: at the start of the
    whitespace run around the last line end within the limit, else of the last run of spaces or
    tabs, provided a non-space character comes before it; else at the limit itself.

    A piece then ends with a non-space character and the next one starts with whitespace: no
    pre-token of byte-level BPE (GPT-2's pattern: letters, digits or punctuation with one
    optional leading space; runs of whitespace) spans such a point, so the pieces encode to
    exactly the whole text's ids; char, byte and ids tokenizers never look across it either.
    Only the last resort (`limit` characters of no whitespace, or of nothing else) can split a
    token in two."""
    for spot in (text.rfind("\n", 0, limit), max(text.rfind(c, 0, limit) for c in " \t")):
        start = spot
        while start > 0 and text[start - 1].isspace():
            start -= 1
        if start > 0:
            return start
    return limit


def cut(text: str) -> Iterator[str]:
    """The text as pieces of at most PIECE_CHARS characters (see `cut_point`)."""
    while len(text) > PIECE_CHARS:
        end = cut_point(text, PIECE_CHARS)
        yield text[:end]
        text = text[end:]
    yield text


def stream_text(path: Path) -> Iterator[str]:
    """A large UTF-8 file as the pieces `cut` makes of its whole text, read a block at a time;
    the first piece comes only after the whole file proved to be UTF-8."""
    check_utf8(path)
    buffer = ""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # newline="": \r\n kept as is
            while block := f.read(PIECE_CHARS):
                buffer += block
                while len(buffer) > PIECE_CHARS:
                    end = cut_point(buffer, PIECE_CHARS)
                    yield buffer[:end]
                    buffer = buffer[end:]
    except OSError as err:
        raise Unreadable("unreadable", f"{path}: {err.strerror or err}") from err
    if buffer:
        yield buffer


def nonblank(parts: Iterator[str]) -> Iterator[str] | None:
    """The pieces again, or None when they hold nothing but whitespace (an empty document);
    only the blank pieces before the first real one are held."""
    held = []
    for part in parts:
        held.append(part)
        if part.strip():
            return itertools.chain(held, parts)
    return None


def as_pieces(split: str, parts: Iterable[str]) -> Iterator[Piece]:
    """One document's pieces, the first marked as starting it."""
    for i, part in enumerate(parts):
        yield split, part, i == 0


def whole_documents(pieces: Iterable[Piece]) -> Iterator[tuple[str, str]]:
    """(split, text) of each document: its pieces joined (for small corpora held in memory)."""
    parts: list[str] = []
    split = ""
    for piece_split, text, first in pieces:
        if first and parts:
            yield split, "".join(parts)
            parts = []
        split = piece_split
        parts.append(text)
    if parts:
        yield split, "".join(parts)


def content_digest(path: Path) -> str:
    """A hash of the file's bytes, so the cache key follows an edit that keeps size and mtime
    (`cp -p`, `rsync -a`); "unreadable" for a file the reading pass will skip and count."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:32]  # ~600 MB/s with SHA-NI
    except OSError:
        return "unreadable"


class TextFiles:
    """The `data=text` source: a folder of files in one of four layouts (see docs/corpora.md).

    - `train.txt` + `validation.txt` [+ test]: one document per split file (the classic layout);
    - `train/` + `validation/` (or `valid/`, `val/`) [+ `test/`] subfolders, any depth;
    - any other folder: every file under it, documents held out by hash (`val_fraction`);
    - `train`/`validation`/`test` set explicitly: a file, folder or glob, relative to the root.
    Files whose suffix is not in `suffixes` are ignored and counted; hidden ones are ignored;
    dangling or self-referencing symlinks are skipped and counted (`skipped_files`).
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
        self.skipped_files: Counter[str] = Counter()  # reason -> files listed but not statable

    # ---- finding the files -----------------------------------------------------------------

    def files(self) -> list[CorpusFile]:
        """Every file of the corpus in a fixed order; fails with one line when none is found or
        a required split is missing."""
        if not self.root.is_dir():
            raise ConfigError(
                f"data.root={self.root}: no such folder; set data.root to the data folder"
            )
        self.ignored_files = 0
        self.skipped_files = Counter()
        layout = self._layout()
        hashed = "validation" not in layout  # then train's documents are assigned by hash
        by_split = {split: self._expand(split, s, hashed) for split, s in layout.items()}
        found = [f for files in self._disjoint(by_split, layout).values() for f in files]
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

    def _disjoint(
        self, by_split: dict[str, list[CorpusFile]], layout: dict[str, str]
    ) -> dict[str, list[CorpusFile]]:
        """The files of each split, none in two (compared by device and inode, so a symlink or
        hard link to another split's file counts as that file, and one file reached twice is
        read once). Train found by layout (the whole root, `train/`) leaves out what other
        splits hold; two splits the user named that share a file are refused, since only the
        user knows which one is meant."""
        real: dict[str, dict[tuple[int, int], CorpusFile]] = {split: {} for split in by_split}
        for split, files in by_split.items():
            for file in files:
                real[split].setdefault(file.identity, file)
        if self.names["train"] is None:
            others = {key for split, files in real.items() if split != "train" for key in files}
            real["train"] = {k: f for k, f in real["train"].items() if k not in others}
        check_disjoint(
            real,
            lambda first, second, key: (
                f"data.source.{second}={layout[second]}: {real[second][key].path} is also in "
                f"the {first} split (data.source.{first}={layout[first]}); a document may be in "
                "one split only, so name disjoint files, folders or globs"
            ),
        )
        return {split: list(files.values()) for split, files in real.items()}

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
        entries = (self._entry(p, assigned) for p in sorted(set(paths)) if self._wanted(p))
        return [entry for entry in entries if entry is not None]

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

    def _entry(self, path: Path, split: str | None) -> CorpusFile | None:
        """The file, or None (skipped and counted) when it cannot be stat'ed: a dangling or
        self-referencing symlink, or a file deleted since it was listed."""
        try:
            stat = path.stat()
        except OSError as err:
            reason = "broken_link" if path.is_symlink() else "unreadable"
            self.skipped_files[reason] += 1
            if self.skipped_files.total() <= 3:
                log.warning(f"skipped {path}: {err.strerror or err} ({reason})")
            return None
        try:
            name = str(path.relative_to(self.root))
        except ValueError:  # a glob outside the root
            name = str(path.resolve())
        return CorpusFile(path, name, split, stat.st_size, (stat.st_dev, stat.st_ino))

    def file_digest(self, file: CorpusFile) -> str:
        """What keys the cache for this file: its content (see `content_digest`)."""
        return content_digest(file.path)

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

    def pieces(self, file: CorpusFile, skipped: dict[str, int]) -> Iterator[Piece]:
        """The pieces (see `cut`) of each non-empty document of the file, a large text file
        read as it goes; bad records and empty texts are counted in `skipped` by reason; a file
        that cannot be read raises Unreadable before its first piece."""
        for i, record in enumerate(self._records(file, skipped)):
            parts = cut(record) if isinstance(record, str) else record
            if not isinstance(parts, Iterator):
                skipped["no_text"] = skipped.get("no_text", 0) + 1
            elif (parts := nonblank(parts)) is None:
                skipped["empty"] = skipped.get("empty", 0) + 1
            else:
                yield from as_pieces(self.split_of(file, f"{file.name}:{i}"), parts)

    def documents(self, file: CorpusFile, skipped: dict[str, int]) -> Iterator[tuple[str, str]]:
        """(split, text) of each non-empty document of the file, whole (small corpora only)."""
        return whole_documents(self.pieces(file, skipped))

    def _records(self, file: CorpusFile, skipped: dict[str, int]) -> Iterator[Any]:
        """The file's records: texts, the pieces of a streamed text file, or anything else
        (a bad record, counted by `pieces`)."""
        suffix = suffix_of(file.path, self.suffixes)
        if suffix in (".jsonl", ".jsonl.gz"):
            return self._jsonl(file.path, skipped)
        if suffix == ".parquet":
            return self._parquet(file.path)
        if file.size > PIECE_CHARS:  # more characters than one piece, perhaps: stream it
            return iter([stream_text(file.path)])
        return iter([read_text(file.path)])

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
