"""task.members: K classifiers trained side by side, each on its own loss, their probabilities
averaged at prediction."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lm_lab.build import build_module, load_task
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.tasks.classifier import Classifier
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

BAG = "task.ngram_bag={orders:[1,2],buckets:64,dim:4,dropout:0.0}"


def _module(compose, *overrides: str) -> tuple[Classifier, CharTokenizer]:
    cfg = compose("model=cnn", "task=classify", "task.head_dropout=0", BAG, *overrides)
    tokenizer = CharTokenizer().fit(["abcdefgh"])
    return build_module(cfg, tokenizer, ["x", "y", "z"]), tokenizer


def _batch(tokenizer: CharTokenizer) -> dict[str, torch.Tensor]:
    ids = torch.tensor([tokenizer.encode("abcab"), tokenizer.encode("hgfed")])  # (2, 5)
    return {"input_ids": ids, "pad_mask": ids == -1, "labels": torch.tensor([0, 2])}


def test_prediction_is_the_mean_of_the_members_probabilities(compose):
    module, tokenizer = _module(compose, "task.members=3")
    module.eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        members = module.member_logits(batch["input_ids"], batch["pad_mask"])  # (3, 2, 3)
        probs = (members[0].softmax(-1) + members[1].softmax(-1) + members[2].softmax(-1)) / 3
        torch.testing.assert_close(module(batch["input_ids"], batch["pad_mask"]).exp(), probs)
    assert members.shape == (3, 2, 3)
    assert not torch.allclose(members[0], members[1])  # each member starts from its own init
    assert module.others[0]["backbone"] is not module.backbone
    assert module.others[1]["ngram_bag"] is not module.ngram_bag


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_each_member_trains_on_its_own_loss(compose):
    module, tokenizer = _module(compose, "task.members=2")
    batch = _batch(tokenizer)
    loss = module.training_step(batch, 0)
    members = module.member_logits(batch["input_ids"], batch["pad_mask"])  # (2, 2, 3)
    own = [F.cross_entropy(members[k], batch["labels"]) for k in range(2)]
    torch.testing.assert_close(loss, (own[0] + own[1]) / 2)


def test_one_member_is_the_plain_classifier(compose):
    module, tokenizer = _module(compose)
    batch = _batch(tokenizer)
    module.eval()
    with torch.no_grad():
        logits = module(batch["input_ids"], batch["pad_mask"])
        torch.testing.assert_close(logits, module.member_logits(batch["input_ids"])[0])
    assert len(module.others) == 0


@pytest.mark.parametrize("override", ["init_from=some.ckpt", "finetune=lora"])
def test_members_refuse_a_pretrained_or_frozen_start(compose, override):
    with pytest.raises(ConfigError, match="task.members=2 trains 2 models from scratch"):
        _module(compose, "task.members=2", override)


def test_an_ensemble_run_saves_and_reloads_every_member(compose):
    cfg = compose("model=cnn", "task.members=2", BAG, "trainer.limit_train_batches=2")
    metrics = train(cfg)["metrics"]
    assert {"test/acc", "val/acc"} <= set(metrics)
    path = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    loaded = load_task(path, Classifier)
    assert len(loaded.others) == 1
    ids = torch.tensor([loaded.tokenizer.encode("Return the value")])
    with torch.no_grad():
        members = loaded.member_logits(ids)  # (2, 1, C): both members came back trained
        assert not torch.allclose(members[0], members[1])
        expected = members.softmax(-1).mean(0)
        torch.testing.assert_close(loaded(ids).exp(), expected)
