"""Classification from a pretrained decoder reads it as it was trained: causal attention (LSTMs
forward only) and the state of each row's last real token, unless the user sets otherwise."""

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from lm_lab.build import build_module, load_module, load_task, trained_causally
from lm_lab.checkpoint import CheckpointMeta
from lm_lab.data.tokenization.tokenizers import ByteTokenizer
from lm_lab.finetune.setup import prepare_finetune
from lm_lab.finetune.transfer import pretrained_tokenizer
from lm_lab.hf.configure import use_pretrained
from lm_lab.hf.load import Pretrained
from lm_lab.tasks.base import TaskModule
from lm_lab.tasks.classifier import Classifier

LABELS = ["neg", "pos"]
LENGTHS = (7, 3, 10)  # real tokens per row of a right-padded (3, 10) batch
ENCODERS = ["transformer", "bilstm", "hybrid", "cnn"]


def right_padded(pad_id: int) -> tuple[Tensor, Tensor]:
    """(3, 10) ids right-padded with pad_id, and their pad mask (True at padding)."""
    width = max(LENGTHS)
    ids = torch.randint(3, 100, (len(LENGTHS), width), generator=torch.Generator().manual_seed(0))
    pad_mask = torch.arange(width)[None, :] >= torch.tensor(LENGTHS)[:, None]  # (3, 10)
    return ids.masked_fill(pad_mask, pad_id), pad_mask


def last_states(states_of: Callable[[Tensor], Tensor], ids: Tensor) -> Tensor:
    """(B, D): each row run alone, unpadded, through `states_of` ((1, n) -> (1, n, D)), at its
    last token: what the decoder itself computes for that text."""
    return torch.stack([states_of(ids[b : b + 1, :n])[0, -1] for b, n in enumerate(LENGTHS)])


def save_lm(compose: Callable[..., DictConfig], path: Path, encoder: str) -> TaskModule:
    """An untrained task=generate checkpoint at `path` (byte tokenizer); returns its module."""
    cfg = compose("task=generate", "tokenizer=byte", f"model={encoder}")
    torch.manual_seed(0)
    lm = build_module(cfg, ByteTokenizer(), None).eval()
    lm.run_config = OmegaConf.to_container(cfg, resolve=True)
    CheckpointMeta.of(lm).save(path, lm.state_dict())
    return lm


def classifier_from(compose: Callable[..., DictConfig], *overrides: str) -> Classifier:
    """train.run's steps for an lm_lab init_from: its tokenizer, the module, the transfer."""
    cfg = compose("task=classify", *overrides)
    module = build_module(cfg, pretrained_tokenizer(cfg), LABELS)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    return prepare_finetune(cfg, module).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoder_classification_is_causal_on_a_hugging_face_folder(family, hf_dirs, compose):
    """The pooled features are transformers' own last hidden state (after the final norm) at
    each row's last real token; bidirectional attention or mean pooling gives other numbers."""
    folder = hf_dirs[family]
    cfg = compose("task=classify", f"init_from={folder}", "task.baseline=null", tiny=False)
    use_pretrained(cfg)
    pretrained = Pretrained(folder)
    tokenizer = pretrained.tokenizer()
    module = build_module(cfg, tokenizer, LABELS).eval()
    pretrained.load_into(module.backbone)
    assert (cfg.task.causal, cfg.task.pooling) == (True, "last")
    ids, pad_mask = right_padded(tokenizer.pad_id)
    hf = pytest.importorskip("transformers").AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = last_states(lambda x: hf(x, output_hidden_states=True).hidden_states[-1], ids)
        torch.testing.assert_close(module.features(ids, pad_mask), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_decoder_classification_is_causal_on_an_lm_lab_checkpoint(encoder, compose, tmp_path):
    """Every backbone tensor of the LM is used and none is new (no backward LSTM), and the
    features are the LM's causal backbone output at each row's last real token."""
    lm = save_lm(compose, tmp_path / "lm.ckpt", encoder)
    module = classifier_from(compose, f"model={encoder}", f"init_from={tmp_path / 'lm.ckpt'}")
    backbone = {k for k in module.state_dict() if k.startswith("backbone.")}
    assert module.transferred_keys == backbone
    ids, pad_mask = right_padded(ByteTokenizer().pad_id)
    with torch.no_grad():
        expected = last_states(lambda x: lm.backbone(x, None, causal=True), ids)
        torch.testing.assert_close(module.features(ids, pad_mask), expected, atol=1e-5, rtol=0)


def test_a_saved_decoder_classifier_rebuilds_causal(compose, tmp_path):
    """eval.py (load_module) and load_from_checkpoint rebuild the causal forward-only model from
    the checkpoint's config alone: the LM it started from is gone by then."""
    save_lm(compose, tmp_path / "lm.ckpt", "bilstm")
    module = classifier_from(compose, "model=bilstm", f"init_from={tmp_path / 'lm.ckpt'}")
    saved = tmp_path / "best.ckpt"
    CheckpointMeta.of(module).save(saved, module.state_dict())
    (tmp_path / "lm.ckpt").unlink()
    ids, pad_mask = right_padded(ByteTokenizer().pad_id)
    with torch.no_grad():
        expected = module.features(ids, pad_mask)  # (3, D)
        for rebuilt in (load_module(saved)[0], load_task(saved, Classifier)):
            assert (rebuilt.causal, rebuilt.pooling) == (True, "last")
            torch.testing.assert_close(rebuilt.features(ids, pad_mask), expected)


@pytest.mark.parametrize("source", ["smollm2", "model.gguf", "HuggingFaceTB/SmolLM2-135M"])
def test_every_hugging_face_kind_of_init_from_counts_as_a_causal_decoder(source):
    """A named model, a GGUF file and a Hub id are causal LMs, decided without opening them."""
    assert trained_causally(source)


@pytest.mark.parametrize("causal", [False, True])
def test_a_classifier_checkpoint_counts_as_trained_as_its_config_says(causal, compose, tmp_path):
    """init_from an lm_lab classifier follows its saved (resolved) task.causal."""
    path = tmp_path / "clf.ckpt"
    cfg = compose("task=classify", *(["task.causal=true"] if causal else []))
    module = build_module(cfg, ByteTokenizer(), LABELS)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # as train.run saves it
    CheckpointMeta.of(module).save(path, module.state_dict())
    assert trained_causally(str(path)) is causal


@pytest.mark.parametrize(
    ("overrides", "causal", "pooling", "backward_lstms"),
    [
        (("task.causal=false",), False, "mean", True),
        (("task.pooling=mean",), True, "mean", False),
        (("task.causal=false", "task.pooling=last"), False, "last", True),
    ],
)
def test_the_users_setting_wins_over_the_decoder_default(
    overrides, causal, pooling, backward_lstms, compose, tmp_path
):
    save_lm(compose, tmp_path / "lm.ckpt", "bilstm")
    init_from = f"init_from={tmp_path / 'lm.ckpt'}"
    module = classifier_from(compose, "model=bilstm", init_from, *overrides)
    assert (module.causal, module.pooling) == (causal, pooling)
    assert any(".bwd." in k for k in module.state_dict()) == backward_lstms


@pytest.mark.parametrize(
    ("overrides", "causal", "pooling"),
    [((), False, "mean"), (("task.causal=true",), True, "last")],
)
def test_from_scratch_the_classifier_stays_bidirectional(overrides, causal, pooling, compose):
    cfg = compose("task=classify", "model=bilstm", *overrides)
    module = build_module(cfg, ByteTokenizer(), LABELS)
    assert (module.causal, module.pooling) == (causal, pooling)
    assert OmegaConf.to_container(cfg, resolve=True)["model"]["bidirectional"] == (not causal)


def test_the_choice_is_logged_in_one_line_that_says_how_to_change_it(compose, tmp_path, caplog):
    save_lm(compose, tmp_path / "lm.ckpt", "transformer")
    with caplog.at_level(logging.INFO, logger="lm_lab"):
        classifier_from(compose, f"init_from={tmp_path / 'lm.ckpt'}")
    lines = [r.getMessage() for r in caplog.records if "task.causal=" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("task.causal=true, task.pooling=last (init_from=")
    assert "trained causally" in lines[0] and "change with task.causal=true|false" in lines[0]


def test_train_py_keeps_a_command_line_override_and_saves_it(
    compose, train_cli, planted_csv, tmp_path
):
    """`task.causal=false` typed on the command line wins over the decoder default, the log
    line says so, and best.ckpt's config holds the setting eval.py rebuilds."""
    save_lm(compose, tmp_path / "lm.ckpt", "transformer")
    data = ("task=classify", "data=csv", f"data.root={planted_csv}", "logger=[]", "test=false")
    done = train_cli(*data, f"init_from={tmp_path / 'lm.ckpt'}", "task.causal=false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "task.causal=false, task.pooling=mean (task.causal as set;" in done.stdout + done.stderr
    (best,) = (tmp_path / "logs").rglob("best.ckpt")
    module = load_module(best)[0]
    assert (module.causal, module.pooling) == (False, "mean")
