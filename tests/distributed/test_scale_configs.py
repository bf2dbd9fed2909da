"""The scale-out trainer configs build what they promise, from the machine and the launcher."""

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from lm_lab.cli.resolvers import auto_precision, env_devices_per_node, env_num_nodes
from lm_lab.encoders.lstm import LSTMLayer
from lm_lab.encoders.transformer import TransformerBlock

LAUNCHER_ENV = ("SLURM_NNODES", "SLURM_NTASKS_PER_NODE", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


def test_ddp_sim_is_two_gloo_ranks_with_our_own_sampling(compose):
    cfg = compose("trainer=ddp_sim")
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.world_size == 2
    assert trainer.strategy._process_group_backend == "gloo"
    assert trainer.precision == "32-true" and not cfg.trainer.use_distributed_sampler


def test_fsdp_wraps_each_encoder_block_and_shards_checkpoints(compose):
    strategy = instantiate(compose("trainer=fsdp").trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "sharded"
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {TransformerBlock, LSTMLayer}


def test_precision_auto_is_bf16_only_on_a_bf16_gpu(monkeypatch):
    assert auto_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert auto_precision("gpu") == "bf16-mixed" and auto_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert auto_precision("gpu") == "32-true"


@pytest.mark.parametrize(
    ("env", "nodes", "devices"),
    [
        ({}, 1, "auto"),
        ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, 2, 8),  # torchrun --nnodes 2
        ({"SLURM_NNODES": "4", "SLURM_NTASKS_PER_NODE": "8(x4)"}, 4, 8),  # srun / submitit
    ],
)
def test_multinode_reads_nodes_and_devices_from_the_launcher(env, nodes, devices, monkeypatch):
    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert (env_num_nodes(), env_devices_per_node()) == (nodes, devices)


@pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema")  # by design
def test_slurm_launcher_starts_one_task_per_gpu(compose):
    compose("hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=4")
    launcher = HydraConfig.get().launcher
    assert launcher.tasks_per_node == 4 and launcher._target_.endswith("SlurmLauncher")
