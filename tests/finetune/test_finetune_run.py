"""End to end: train.run with init_from + a strategy, then the small artefact + base in eval."""

import json
from pathlib import Path

import pytest
import torch

from lm_lab.build import load_module
from lm_lab.evaluate import run as evaluate
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

LIMITS = (
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
)


@pytest.fixture
def lora_run(compose, lm_checkpoint):
    """A bilstm classifier fine-tuned with LoRA (LSTM weights and word vectors) from a (causal)
    bilstm LM checkpoint."""
    base = lm_checkpoint("model=bilstm")
    lora = ("finetune=lora", "finetune.targets=[weight_ih,weight_hh,embed]")
    cfg = compose("model=bilstm", "task=classify", f"init_from={base}", *lora, *LIMITS)
    return train(cfg), Path(cfg.paths.output_dir), base


def test_small_artefact_plus_base_reproduces_the_fine_tuned_model(lora_run):
    """One run checked three ways (training is the slow part): report, size, outputs."""
    _, run_dir, base = lora_run
    written = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < written["params"]["all"]["percent"] < 100
    assert written["params"]["embed"]["trainable"] == 0
    adapter = run_dir / "checkpoints" / "adapter.pt"
    # last.ckpt: the full checkpoint (best.ckpt was one too before it kept the weights only)
    assert adapter.stat().st_size < (run_dir / "checkpoints" / "last.ckpt").stat().st_size / 2
    full, _ = load_module(run_dir / "checkpoints" / "best.ckpt")
    small, _ = load_module(run_dir / "checkpoints" / "adapter.pt", str(base))
    ids = torch.randint(1, 256, (3, 12))
    assert torch.allclose(small(ids), full(ids), atol=1e-6)


@pytest.mark.slow
def test_eval_on_artefact_and_base_gives_the_run_test_metrics(lora_run, compose, tmp_path):
    result, run_dir, base = lora_run
    ecfg = compose(
        f"ckpt_path={run_dir / 'checkpoints' / 'adapter.pt'}",
        f"base_ckpt={base}",
        "trainer.limit_test_batches=2",
        config_name="eval",
    )
    ecfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(ecfg)["metrics"]
    assert metrics["test/acc"] == pytest.approx(result["metrics"]["test/acc"])


@pytest.mark.slow
def test_artefact_without_a_base_names_base_ckpt(lora_run):
    _, run_dir, base = lora_run
    base.unlink()  # the run's init_from is gone, and no base_ckpt is given
    with pytest.raises(ConfigError, match="init_from|base_ckpt"):
        load_module(run_dir / "checkpoints" / "adapter.pt")
