"""OmegaConf resolvers the configs use; registered before Hydra composes anything. Kept free of
heavy imports: train.py registers them before Hydra parses the command line."""

import os
import secrets

from omegaconf import OmegaConf

_RUN_UID = f"{os.getpid() % 100000:05d}{secrets.token_hex(1)}"


def auto_precision(accelerator: str = "auto") -> str:
    """bf16 autocast where the GPU has bf16 units; 32-true elsewhere (bf16 on a CPU is slower)."""
    import torch  # only when a trainer config resolves it

    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def env_num_nodes() -> int:
    """Nodes of this job as the launcher states them: SLURM (srun, submitit), torchrun
    (WORLD_SIZE / LOCAL_WORLD_SIZE), else 1; the same config serves both launchers."""
    if "SLURM_NNODES" in os.environ:
        return int(os.environ["SLURM_NNODES"])
    if "LOCAL_WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"]) // int(os.environ["LOCAL_WORLD_SIZE"])
    return 1


def env_devices_per_node() -> int | str:
    """Processes per node as the launcher states them, else "auto" (every visible GPU)."""
    for key in ("SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE"):
        value = os.environ.get(key, "").split("(")[0]  # SLURM may write "8(x2)"
        if value.isdigit():
            return int(value)
    return "auto"


def register_resolvers() -> None:
    """`${not:x}` flips a bool (a causal task builds no backward LSTM); `${uid:}` is a per-process
    suffix so two runs started in the same second get different run dirs; `${auto_precision:acc}`,
    `${env_num_nodes:}` and `${env_devices_per_node:}` read the machine and the launcher, so one
    trainer config serves a laptop, torchrun and SLURM; `${if_null:x,y}` is x unless it is null
    (`resume=<run dir>` reuses that dir instead of making a new one)."""
    resolvers = {
        "not": lambda x: not x,
        "uid": lambda: _RUN_UID,
        "auto_precision": auto_precision,
        "env_num_nodes": env_num_nodes,
        "env_devices_per_node": env_devices_per_node,
        "if_null": lambda x, default: default if x is None else x,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
