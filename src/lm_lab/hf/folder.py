"""A Hugging Face model folder on disk: where it is (a path or a Hub id in the local cache),
its config.json and its safetensors shards."""

import json
import os
import re
from pathlib import Path
from typing import Any

from lm_lab.hf import gguf, registry
from lm_lab.utils.errors import ConfigError

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
HUB_FILES = ["config.json", "*.safetensors", "*.json", "tokenizer*"]


def is_hf_source(source: Any) -> bool:
    """True for a directory (lm_lab checkpoints are files), a Hub id that is not a local path,
    a GGUF file or a registry name (conf/pretrained/<name>.yaml)."""
    if not source:
        return False
    if gguf.is_gguf(source) or registry.lookup(source):
        return True
    path = Path(str(source))
    if path.is_dir():
        return True
    return (
        not path.exists()
        and bool(HUB_ID.match(str(source)))
        and path.suffix not in (".ckpt", ".pt")
    )


def resolve(source: str | Path, key: str = "init_from") -> Path:
    """The local folder of a model: the directory itself, or a Hub id's snapshot from the
    huggingface_hub cache (downloaded only when online: HF_HUB_OFFLINE unset), a GGUF file's or
    a registry name's converted folder (cached)."""
    path, named = Path(str(source)), registry.lookup(source)
    if named:
        path = registry.folder_of(named, key, _from_hub)
    elif gguf.is_gguf(source):
        path = gguf.converted(path, key)
    elif not path.is_dir():
        path = _from_hub(str(source), key)
    if not (path / CONFIG).is_file():
        raise ConfigError(f"{key}={source}: no {CONFIG} in it; pass a Hugging Face model folder")
    return path


def _from_hub(repo_id: str, key: str) -> Path:
    from huggingface_hub import snapshot_download  # only needed for Hub ids

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=offline))
    except Exception as err:  # not cached, offline, unknown id: all mean the same to the user
        try:  # a cached snapshot beats a failed download
            return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
        except Exception:
            raise ConfigError(
                f"{key}={repo_id}: not a folder, and not found on the Hugging Face Hub or in "
                f"its cache ({type(err).__name__}); download it or pass its local folder"
            ) from None


def read_json(path: Path) -> Any:
    """A JSON file of the folder; a truncated or garbled one is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(
            f"{path.name} is not valid JSON ({err}); restore it from the model's source"
        ) from None


def read_config(folder: Path) -> dict[str, Any]:
    """config.json, which must be a JSON object of settings."""
    config = read_json(folder / CONFIG)
    if not isinstance(config, dict):
        raise ConfigError(
            f"{CONFIG} holds a JSON {type(config).__name__}, not an object of settings; "
            "restore it from the model's source"
        )
    return config


def weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or the shards of the index).
    Every file's header is read here, so a corrupt file or a wrong index fails before any
    weight is copied (and before a training run reads its data)."""
    if (folder / INDEX).is_file():
        return _indexed(folder)
    if not (folder / SINGLE).is_file():
        raise ConfigError(f"neither {SINGLE} nor {INDEX}; only safetensors load")
    return dict.fromkeys(tensor_names(folder / SINGLE), folder / SINGLE)


def _indexed(folder: Path) -> dict[str, Path]:
    """The index's weight_map, checked against the shards it names."""
    index = read_json(folder / INDEX)
    names = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(names, dict) or not names:
        raise ConfigError(
            f'{INDEX} has no "weight_map" object (tensor name -> shard file); '
            "restore it from the model's source"
        )
    files = {name: folder / str(shard) for name, shard in names.items()}
    missing = sorted({f.name for f in files.values() if not f.is_file()})
    if missing:
        raise ConfigError(f"shard(s) {missing} listed in {INDEX} are missing")
    held = {shard: tensor_names(shard) for shard in set(files.values())}
    for name, shard in files.items():
        if name not in held[shard]:
            raise ConfigError(
                f"{INDEX} puts {name} in {shard.name}, which does not hold it; "
                "restore the index from the model's source"
            )
    return files


def tensor_names(file: Path) -> set[str]:
    """The tensors a safetensors file holds (its header only; no weight is read)."""
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as f:
            return set(f.keys())
    except Exception as err:  # SafetensorError (random, truncated) or OSError: the file is bad
        raise ConfigError(
            f"{file.name} is not a readable safetensors file ({err}); download it again"
        ) from None
