"""What a finished run leaves: metrics.json with the best of the monitored metric (which the
sweepers get), TensorBoard's HParams, and checkpoints Lightning's own loader reads."""

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lm_lab.build import load_module, load_task
from lm_lab.checkpoint import CheckpointMeta
from lm_lab.tasks.classifier import Classifier
from lm_lab.tasks.language_model import LanguageModel
from lm_lab.train import optimized_value
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError


@pytest.fixture
def lm_run(compose, tmp_path) -> dict:
    """A tiny LM validated 6 times (twice an epoch), logged to CSV and TensorBoard."""
    (tmp_path / "train.txt").write_text("to be or not to be, that is the question\n" * 40)
    (tmp_path / "validation.txt").write_text("whether tis nobler in the mind to suffer\n" * 10)
    cfg = compose(
        "task=generate", "data=text", f"data.root={tmp_path}", "tokenizer=char",
        "logger=[csv,tensorboard]", "trainer.max_epochs=3", "trainer.val_check_interval=0.5",
        "task.optimizer.lr=3e-2",  # large enough that val/loss goes up again: best != last
    )  # fmt: skip
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    return {"dir": run_dir, "result": json.loads((run_dir / "metrics.json").read_text())}


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r["val/loss"]]


def test_metrics_json_holds_the_best_validation_its_step_and_checkpoint(lm_run):
    best, curve = lm_run["result"]["best"], val_curve(lm_run["dir"])
    assert len(curve) == 6
    best_step, best_loss = min(curve, key=lambda point: point[1])
    assert best["metric"] == "val/loss" and best["mode"] == "min"
    assert best["value"] == pytest.approx(best_loss, rel=1e-6)
    assert best["step"] == best_step + 1  # optimizer steps done; the CSV row says step - 1
    assert best["model_path"] == str(lm_run["dir"] / "checkpoints" / "best.ckpt")
    saved = torch.load(best["model_path"], map_location="cpu", weights_only=True)
    assert saved["global_step"] == best["step"]
    assert "optimizer_states" not in saved  # best.ckpt holds the weights; last.ckpt resumes
    last = lm_run["result"]["metrics"]["val/loss"]
    assert last == pytest.approx(curve[-1][1], rel=1e-6) and last > best["value"]


def test_sweepers_get_the_best_of_the_monitored_metric_not_the_last():
    result = {"metrics": {"val/acc": 0.481, "test/acc": 0.5}, "best": {"metric": "val/acc"}}
    result["best"]["value"] = 0.572
    assert optimized_value(OmegaConf.create({"optimized_metric": "val/acc"}), result) == 0.572
    assert optimized_value(OmegaConf.create({"optimized_metric": "test/acc"}), result) == 0.5
    no_validation = {"metrics": {"test/acc": 0.5}, "best": None}
    assert optimized_value(OmegaConf.create({"optimized_metric": "val/acc"}), no_validation) is None


def test_hyper_parameters_reach_tensorboards_hparams_tab(lm_run):
    events = EventAccumulator(str(lm_run["dir"] / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["model/d_model"].number_value == 32 and hparams["task/name"].string_value
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert metrics == {"hp/best/val/loss"} | {f"hp/test/{m}" for m in ("loss", "ppl", "bpc", "acc")}
    best = events.Scalars("hp/best/val/loss")[-1].value
    assert best == pytest.approx(lm_run["result"]["best"]["value"], rel=1e-6)


def test_load_task_rebuilds_the_trained_module(lm_run):
    for name in ("best.ckpt", "last.ckpt"):
        path = lm_run["dir"] / "checkpoints" / name
        loaded = load_task(path, LanguageModel)
        reference, _ = load_module(path)
        ids = torch.tensor([loaded.tokenizer.encode("to be or")])  # (1, T)
        assert type(loaded) is LanguageModel and not loaded.training
        torch.testing.assert_close(loaded(ids), reference(ids), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="a LanguageModel checkpoint, not a Classifier"):
        load_task(path, Classifier)


def test_an_adapter_only_file_points_to_its_own_loader(tmp_path):
    path = tmp_path / "adapter.pt"
    CheckpointMeta(config={}, tokenizer="{}", adapter_only=True).save(path, {})
    with pytest.raises(ConfigError, match=r"adapter-only file; load it with lm_lab.build"):
        load_task(path, LanguageModel)


def test_lightnings_load_from_checkpoint_names_load_task(tmp_path):
    """tasks/ sits below the assembly layer, so Lightning's classmethod cannot rebuild; it says
    which function does, before reading anything."""
    path = tmp_path / "best.ckpt"
    with pytest.raises(ConfigError, match=r"use lm_lab\.build\.load_task\(path, Classifier\)$"):
        Classifier.load_from_checkpoint(path)
