"""OmegaConf resolvers the configs use; registered before Hydra composes anything."""

import os
import secrets

from omegaconf import OmegaConf

_RUN_UID = f"{os.getpid() % 100000:05d}{secrets.token_hex(1)}"


def register_resolvers() -> None:
    """`${not:x}` flips a bool (a causal task builds no backward LSTM); `${uid:}` is a per-process
    suffix so two runs started in the same second get different run dirs; `${if_null:x,y}` is
    x unless it is null (`resume=<run dir>` reuses that dir instead of making a new one)."""
    if not OmegaConf.has_resolver("not"):
        OmegaConf.register_new_resolver("not", lambda x: not x)
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: _RUN_UID)
    if not OmegaConf.has_resolver("if_null"):
        OmegaConf.register_new_resolver("if_null", lambda x, default: default if x is None else x)
