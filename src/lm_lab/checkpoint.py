"""The one checkpoint format: what lm_lab adds to a Lightning checkpoint so that it is
self-contained (eval.py, generate.py and init_from need no run dir and no data).

A low layer: tasks write it, finetune/ and cli/ read it, build.py turns it back into a module.
Every read or write of the `lm_lab` entry goes through `CheckpointMeta`."""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lm_lab.utils.errors import ConfigError

KEY = "lm_lab"  # the entry of a checkpoint dict that holds CheckpointMeta.to_dict()
FORMAT_VERSION = 1  # raise when a field changes meaning; from_checkpoint reads older versions


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
        entry = dict(ckpt[KEY])
        entry.setdefault("format_version", 1)  # written before the field existed
        return cls(**entry)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """A bare checkpoint (no trainer state): weights plus this entry."""
        torch.save({"state_dict": state_dict, KEY: self.to_dict()}, path)


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Loads a checkpoint on the CPU and checks it carries lm_lab's own state; errors name
    `key`, the option that gave the path (ckpt_path, init_from, base_ckpt)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path}: no such file; pass a <run dir>/checkpoints/*.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files fail in many ways
        raise ConfigError(f"{key}={path}: not a readable checkpoint ({err})") from err
    if KEY not in ckpt or "state_dict" not in ckpt:
        raise ConfigError(f"{key}={path}: not an lm_lab checkpoint (no config/tokenizer in it)")
    return ckpt


def saved_step(path: str | Path) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at (memory-mapped: weights stay on
    disk); None for a bare checkpoint without trainer state."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False).get("global_step")


def read_meta(path: str | Path, key: str = "ckpt_path") -> CheckpointMeta:
    return CheckpointMeta.from_checkpoint(read_checkpoint(path, key))
