"""The FSDP wrap policy, from dotted class names in conf/trainer/fsdp.yaml.
(Launching the ranks: cli/launch.py; precision and node count: cli/resolvers.py; the per-rank
report: callbacks/rank_report.py.)"""

from hydra.utils import get_class


def block_classes(blocks: list[str]) -> set[type]:
    """FSDP auto-wrap policy from dotted class names: one FSDP unit per encoder block."""
    return {get_class(name) for name in blocks}
