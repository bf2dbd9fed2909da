"""The one checkpoint format: what lm_lab adds to a Lightning checkpoint so that it is
self-contained (eval.py, generate.py and init_from need no run dir and no data).

A checkpoint is data, never code: every file is read with `torch.load(weights_only=True)`, which
unpickles tensors and plain values only, so a file that holds a pickled call (`os.system`, ...)
is refused before anything in it runs. Everything lm_lab writes is plain data for that reason
(the `lm_lab` entry is a dict of str/bool/int/list/dict; callback states are tensors and ints).
Files are written to a temporary file in the same folder and renamed into place, so a full disk
or a kill never leaves a partial checkpoint.

A low layer: tasks write it, finetune/ and cli/ read it, build.py turns it back into a module.
Every read or write of the `lm_lab` entry goes through `CheckpointMeta`."""

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from lm_lab.utils.errors import ConfigError

KEY = "lm_lab"  # the entry of a checkpoint dict that holds CheckpointMeta.to_dict()
FORMAT_VERSION = 1  # raise when a field changes meaning; from_checkpoint reads older versions


class MalformedMeta(ValueError):
    """The `lm_lab` entry is not what CheckpointMeta writes; the message says which field."""


@dataclass
class CheckpointMeta:
    """The run's resolved config, its fitted tokenizer (JSON) and label names; for adapter-only
    artefacts also the backbone keys the base checkpoint must supply."""

    config: dict[str, Any]
    tokenizer: str
    label_names: list[str] | None = None
    adapter_only: bool = False
    base_keys: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @classmethod
    def of(cls, module: Any, **extra: Any) -> "CheckpointMeta":
        """From a task module (its `run_config`, `tokenizer`, `label_names`)."""
        return cls(module.run_config, module.tokenizer.to_json(), module.label_names, **extra)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "CheckpointMeta":
        """Raises MalformedMeta when the entry is not a dict of the fields, of their types."""
        entry = ckpt[KEY]
        if not isinstance(entry, dict):
            raise MalformedMeta(f"a {type(entry).__name__}, not a dict")
        entry = {"format_version": 1} | entry  # written before the field existed
        unknown = sorted(set(entry) - {f.name for f in fields(cls)})
        missing = [name for name in ("config", "tokenizer") if name not in entry]
        if unknown or missing:
            raise MalformedMeta(f"missing {missing}" if missing else f"unknown fields {unknown}")
        for name, value in entry.items():
            if not _FIELD_TYPES[name](value):
                raise MalformedMeta(f"{name} is a {type(value).__name__}")
        if entry["format_version"] > FORMAT_VERSION:
            raise MalformedMeta(
                f"format_version {entry['format_version']} is newer than this lm_lab's "
                f"{FORMAT_VERSION}; update lm_lab"
            )
        return cls(**entry)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """A bare checkpoint (no trainer state): weights plus this entry."""
        write_checkpoint({"state_dict": state_dict, KEY: self.to_dict()}, path)


def _list_of_str(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_FIELD_TYPES = {  # CheckpointMeta field -> the check its stored value must pass
    "config": lambda v: isinstance(v, dict),
    "tokenizer": lambda v: isinstance(v, str),
    "label_names": lambda v: v is None or _list_of_str(v),
    "adapter_only": lambda v: isinstance(v, bool),
    "base_keys": _list_of_str,
    "format_version": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save into `<path>.tmp` beside it, then an atomic rename: `path` is either the old
    file or the whole new one. A failed write (ENOSPC, EIO) removes the partial temporary file
    and is one line naming the file, since the fix is the disk, not the code."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: never mistaken for a checkpoint
    try:
        with tmp.open("wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"{path}: cannot write the checkpoint ({err.strerror or err}); nothing partial is "
            f"left in {path.parent}: free space there or set hydra.run.dir to a disk with room"
        ) from err


def load_plain(path: str | Path, name: str, mmap: bool = False) -> Any:
    """torch.load with weights_only=True; what fails is one line led by `name` (the option and
    path the user gave): code in the file is refused by name, other failures in one clause."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # truncated, foreign or hostile files fail in many ways
        code = re.search(r"GLOBAL (\S+)", str(err))
        if code:
            raise ConfigError(
                f"{name}: refused: the file holds a pickled object ({code.group(1)}), not only "
                "tensors and plain data; lm_lab never writes one and never runs what a "
                "checkpoint holds, so use a checkpoint from a run you trust"
            ) from err
        raise ConfigError(f"{name}: not a readable checkpoint ({_reason(err)})") from err


def _reason(err: Exception) -> str:
    """torch's error in one short clause (its own texts run to hundreds of characters)."""
    text = str(err)
    if isinstance(err, EOFError) or not text:
        return "the file is empty"
    if "zip archive" in text or "central directory" in text:
        return "truncated or corrupt: its zip archive is incomplete"
    if text.startswith("Weights only load failed"):
        return "not a torch checkpoint file"
    return text.splitlines()[0].split(". ")[0][:120]


def read_checkpoint(
    path: str | Path, key: str = "ckpt_path", name: str | None = None
) -> dict[str, Any]:
    """Loads a checkpoint on the CPU and checks it carries lm_lab's own state; errors name
    `key`, the option that gave the path (ckpt_path, init_from, base_ckpt), or `name` when the
    file is not the option's value itself (resume=<run dir> reads its last.ckpt)."""
    path = Path(path)
    name = name or f"{key}={path}"
    if not path.is_file():
        raise ConfigError(f"{name}: no such file; pass a <run dir>/checkpoints/*.ckpt")
    ckpt = load_plain(path, name)
    if not (isinstance(ckpt, dict) and KEY in ckpt and isinstance(ckpt.get("state_dict"), dict)):
        raise ConfigError(f"{name}: not an lm_lab checkpoint (no config/tokenizer in it)")
    try:
        CheckpointMeta.from_checkpoint(ckpt)
    except MalformedMeta as err:
        raise ConfigError(
            f"{name}: malformed lm_lab entry ({err}); use the file as an lm_lab run wrote it"
        ) from err
    return ckpt


def saved_step(path: str | Path) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at (memory-mapped: weights stay on
    disk); None for a bare checkpoint without trainer state."""
    return load_plain(path, str(path), mmap=True).get("global_step")


def read_meta(path: str | Path, key: str = "ckpt_path", name: str | None = None) -> CheckpointMeta:
    return CheckpointMeta.from_checkpoint(read_checkpoint(path, key, name))
