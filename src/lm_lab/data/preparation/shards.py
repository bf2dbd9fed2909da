"""Token shards on disk: flat binary files of uint16 ids (uint32 past 65,536 ids), a manifest
that makes them visible, and memory-mapped reading.

A prepared corpus is one folder, `<cache_dir>/corpora/<key>/`, holding `tokenizer.json`,
`<split>-<n>.bin` shards and `manifest.json`. It is built in a private `<key>.tmp-<host>-<pid>`
folder, the manifest written last, and the folder renamed into place in one atomic step: a
reader sees a whole corpus or none, and a preparation killed mid-way leaves only a temporary
folder that no reader uses (the next preparation on that host deletes it).

Each split's shards, laid end to end, are the split's documents tokenized one by one and joined
by the ids of `SEPARATOR`, exactly `language_modeling.token_stream` (a long document arrives in
pieces, tokenized apart and laid end to end without a separator). A shard ends at a document
boundary once it holds `shard_tokens`; training windows never cross shard boundaries (see
`language_modeling.WindowBatches`).
"""

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT_VERSION = 1  # bump when the layout of the folder changes
SEPARATOR = "\n\n"  # between the documents of a split


def dtype_for(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type holding every id: 2 bytes per token up to 65,536 ids."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class ShardWriter:
    """Appends the documents of one split, piece by piece, separator between documents, to
    shard files."""

    def __init__(
        self, folder: Path, split: str, dtype: np.dtype, separator: Sequence[int], shard_tokens: int
    ) -> None:
        self.folder, self.split, self.dtype = folder, split, dtype
        self.separator = np.asarray(separator, dtype=dtype)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []  # {"file", "tokens"} per closed shard
        self.documents = self.chars = 0
        self._file: Any = None
        self._tokens = 0  # in the open shard

    def add(self, pieces: Sequence[tuple[Sequence[int], bool]], chars: int) -> int:
        """Appends the pieces ((ids, whether it starts a document), in order); returns the
        tokens written. A shard closes at the first document boundary past `shard_tokens`."""
        parts: list[np.ndarray] = []
        pending = written = separators = 0
        for ids, first in pieces:
            if first and self._tokens + pending >= self.shard_tokens:
                written += self._write(parts, pending)
                self.close()
                parts, pending = [], 0
            if first and self.documents:
                parts.append(self.separator)
                pending += len(self.separator)
                separators += 1
            parts.append(np.asarray(ids, dtype=self.dtype))
            pending += len(parts[-1])
            self.documents += first
        written += self._write(parts, pending)
        self.chars += chars + len(SEPARATOR) * separators
        return written

    def _write(self, parts: list[np.ndarray], n_tokens: int) -> int:
        if not parts:
            return 0
        if self._file is None:
            name = f"{self.split}-{len(self.shards):05d}.bin"
            self._file = (self.folder / name).open("wb")
            self.shards.append({"file": name, "tokens": 0})
        np.concatenate(parts).tofile(self._file)
        self._tokens += n_tokens
        return n_tokens

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1]["tokens"] = self._tokens
            self._file, self._tokens = None, 0

    def summary(self) -> dict[str, Any]:
        self.close()
        tokens = sum(shard["tokens"] for shard in self.shards)
        return {
            "shards": self.shards,
            "tokens": tokens,
            "chars": self.chars,
            "documents": self.documents,
        }


class TokenShards:
    """A split as one or more 1-D arrays of ids (memory-mapped shards, or one tensor in
    memory); windows are gathered per batch and only then widened to int64."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.lengths = np.array([len(a) for a in arrays], dtype=np.int64)

    @classmethod
    def of(cls, stream: "Tensor | TokenShards") -> "TokenShards":
        return stream if isinstance(stream, TokenShards) else cls([stream.numpy()])

    @classmethod
    def open(cls, folder: Path, split: dict[str, Any], dtype: str) -> "TokenShards":
        return cls([np.memmap(folder / s["file"], dtype=dtype, mode="r") for s in split["shards"]])

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def windows(self, shard: Tensor, offset: Tensor, width: int) -> Tensor:
        """Rows of `width` tokens: row i is arrays[shard[i]][offset[i] : offset[i] + width]."""
        out = torch.empty((len(shard), width), dtype=torch.long)  # (B, width)
        span = np.arange(width)
        for s in torch.unique(shard).tolist():
            rows = shard == s
            index = offset[rows].numpy()[:, None] + span  # (b, width)
            out[rows] = torch.from_numpy(self.arrays[s][index].astype(np.int64))
        return out


# ---- the folder of a prepared corpus -------------------------------------------------------


def read_manifest(folder: Path, warn: bool = True) -> dict[str, Any] | None:
    """The manifest of a complete corpus, or None (absent, or damaged: then named in a warning
    and the corpus is prepared again)."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest["version"] == FORMAT_VERSION:
            return manifest
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        if warn:
            log.warning(f"{path}: unreadable manifest ({err}); preparing the corpus again")
    return None


def building_folder(final: Path) -> Path:
    """A fresh private folder beside `final`; leftovers of dead preparations on this host go."""
    final.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for stale in final.parent.glob(f"{final.name}.tmp-{host}-*"):
        pid = int(stale.name.rsplit("-", 1)[-1])
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f"{final.name}.tmp-{host}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def publish(tmp: Path, final: Path, manifest: dict[str, Any]) -> None:
    """Writes the manifest last and renames the folder into place; when a concurrent
    preparation got there first, its (identical) corpus is kept and this one dropped."""
    manifest = {"version": FORMAT_VERSION, **manifest}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if final.is_dir() and read_manifest(final, warn=False) is None:  # damaged: nobody reads it
        shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if read_manifest(final) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def link(final: Path, alias: Path) -> None:
    """`alias` -> `final` (a relative symlink, made atomically), unless alias already exists.
    Only a shortcut: a cache it cannot write (read-only, shared) goes without it."""
    if alias.exists() or alias.is_symlink():
        return
    tmp = alias.with_name(f"{alias.name}.link-{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(final.name)
        tmp.replace(alias)
