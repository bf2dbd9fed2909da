"""A checkpoint is data, never code: a file holding a pickled call (here `Path.touch` of a marker
file, as an attacker's `os.system` would be) is refused in one line by every entry point that
reads a checkpoint, and the call never runs. Everything lm_lab itself writes loads with
`torch.load(weights_only=True)`."""

import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.build import load_task
from lm_lab.checkpoint import KEY, CheckpointMeta
from lm_lab.tasks.classifier import Classifier
from lm_lab.tasks.language_model import LanguageModel
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REFUSED = "refused: the file holds a pickled object"


class Payload:
    """Unpickling this calls `Path.touch(marker)`: proof that the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def crafted(lm_run, tmp_path) -> tuple[Path, Path]:
    """(a real best.ckpt with one extra key holding the payload, the marker it would touch)."""
    marker = tmp_path / "pwned"
    ckpt = torch.load(lm_run[0] / "checkpoints" / "best.ckpt", weights_only=True)
    path = tmp_path / "best.ckpt"
    torch.save({**ckpt, "extra": Payload(marker)}, path)
    return path, marker


def entry(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python <command>` from `cwd` (logs there too), as a user runs it."""
    return subprocess.run(
        [sys.executable, *command],
        cwd=cwd,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def hydra_script(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return entry(str(ROOT / script), *overrides, f"paths.log_dir={cwd / 'logs'}", cwd=cwd)


def assert_refused(done: subprocess.CompletedProcess, marker: Path, name: str) -> None:
    err = done.stderr.strip()
    assert done.returncode == 2, err[-3000:]
    assert "\n" not in err and err.startswith(f"error: {name}"), err[-3000:]
    assert REFUSED in err
    assert not marker.exists()


def adapter_of(best: Path, to: Path) -> Path:
    """A genuine adapter-only artefact over `best`'s backbone (what finetune=lora would save):
    loading it reads base_ckpt= for the backbone."""
    ckpt = torch.load(best, weights_only=True)
    meta = CheckpointMeta.from_checkpoint(ckpt)
    meta.adapter_only = True
    meta.base_keys = sorted(k for k in ckpt["state_dict"] if k.startswith("backbone."))
    meta.save(to, {k: v for k, v in ckpt["state_dict"].items() if k not in meta.base_keys})
    return to


def test_eval_py_refuses_code_in_ckpt_path(crafted, tmp_path):
    path, marker = crafted
    done = hydra_script("eval.py", f"ckpt_path={path}", cwd=tmp_path)
    assert_refused(done, marker, f"ckpt_path={path}: ")


def test_generate_py_refuses_code_in_ckpt_path(crafted, tmp_path):
    path, marker = crafted
    done = hydra_script("generate.py", f"ckpt_path={path}", "prompt=to", cwd=tmp_path)
    assert_refused(done, marker, f"ckpt_path={path}: ")


@pytest.mark.parametrize("key", ["ckpt_path", "init_from"])
def test_train_py_refuses_code_in_ckpt_path_and_init_from(key, lm_run, crafted, tmp_path):
    path, marker = crafted
    done = hydra_script("train.py", *lm_run[1], f"{key}={path}", cwd=tmp_path)
    assert_refused(done, marker, f"{key}={path}: ")


def test_train_py_resume_refuses_code_in_last_ckpt(crafted, tmp_path):
    path, marker = crafted
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    path.rename(run_dir / "checkpoints" / "last.ckpt")
    done = entry(str(ROOT / "train.py"), f"resume={run_dir}", cwd=tmp_path)  # no other override
    assert_refused(done, marker, f"resume={run_dir} (checkpoints/last.ckpt): ")


def test_eval_py_refuses_code_in_base_ckpt(lm_run, crafted, tmp_path):
    path, marker = crafted
    adapter = adapter_of(lm_run[0] / "checkpoints" / "best.ckpt", tmp_path / "adapter.pt")
    done = hydra_script("eval.py", f"ckpt_path={adapter}", f"base_ckpt={path}", cwd=tmp_path)
    assert_refused(done, marker, f"base_ckpt={path}: ")


def test_export_refuses_code_in_the_checkpoint(crafted, tmp_path):
    path, marker = crafted
    done = entry("-m", "lm_lab.export", str(path), str(tmp_path / "hf"), cwd=ROOT / "src")
    assert_refused(done, marker, f"source={path}: ")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("task", [LanguageModel, Classifier])
def test_load_from_checkpoint_refuses_code(task, crafted):
    path, marker = crafted
    with pytest.raises(ConfigError, match=f"^ckpt_path={path}: {REFUSED}"):
        load_task(path, task)
    assert not marker.exists()


def test_fsdp_reads_every_checkpoint_it_is_handed_as_data(compose, tmp_path):
    """Lightning resolves ckpt_path=last / SLURM's hpc itself and FSDP opens a file with its own
    unpickler: trainer=fsdp's strategy refuses code there too, and another run's sharded folder
    (pickled metadata); its own folders and plain files go on to Lightning's load."""
    strategy = instantiate(compose("trainer=fsdp").trainer.strategy)
    marker, evil = tmp_path / "pwned", tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "extra": Payload(marker)}, evil)
    with pytest.raises(ConfigError, match=REFUSED):
        strategy.load_checkpoint(evil)
    assert not marker.exists()
    sharded = tmp_path / "best.ckpt"
    sharded.mkdir()
    with pytest.raises(ConfigError, match="sharded FSDP checkpoint of another run"):
        strategy.load_checkpoint(sharded)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain)
    strategy._written.add(sharded.resolve())
    for path in (plain, sharded):  # past the checks: Lightning's load needs a model set up
        with pytest.raises(AssertionError):
            strategy.load_checkpoint(path)


def test_what_lm_lab_writes_loads_as_plain_data(lm_run, tmp_path):
    """last.ckpt (full training state), best.ckpt (weights) and an adapter artefact: no pickled
    object of any class, so weights_only=True reads them all, and best.ckpt holds no optimizer
    state (a third of last.ckpt's size: AdamW keeps two moments per weight)."""
    checkpoints = lm_run[0] / "checkpoints"
    adapter = adapter_of(checkpoints / "best.ckpt", tmp_path / "adapter.pt")
    for path in (checkpoints / "last.ckpt", checkpoints / "best.ckpt", adapter):
        torch.load(path, weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    assert {"optimizer_states", "callbacks", "lr_schedulers"} <= set(last)
    assert not {"optimizer_states", "callbacks", "lr_schedulers"} & set(best)
    assert best["state_dict"].keys() == last["state_dict"].keys()
    size = (checkpoints / "best.ckpt").stat().st_size
    assert size < 0.4 * (checkpoints / "last.ckpt").stat().st_size


def test_a_classifier_ensemble_with_an_ngram_bag_writes_plain_data(compose, planted_csv):
    """The recipes' shape (task.members, task.ngram_bag, label names in the lm_lab entry):
    both checkpoints load with weights_only=True and rebuild the trained classifier."""
    bag = "task.ngram_bag={orders:[1,2],buckets:64,dim:4,dropout:0.0}"
    data = ("task=classify", "data=csv", f"data.root={planted_csv}", "tokenizer=char")
    cfg = compose(*data, "model=cnn", "task.members=2", bag, "logger=[]", "test=false")
    train(cfg)
    for name in ("last.ckpt", "best.ckpt"):
        path = Path(cfg.paths.output_dir) / "checkpoints" / name
        assert torch.load(path, weights_only=True)[KEY]["label_names"] == ["neg", "pos"]
        assert isinstance(load_task(path, Classifier), Classifier)
