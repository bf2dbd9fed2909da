"""Compose the real configs the way train.py does, shrunk to tiny sizes, writing only to tmp."""

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# Tiny models run fastest on one thread, and the DDP tests start several processes on 2 cores:
# more threads only fight over them (subprocesses inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, even beside another editable one

from lm_lab.cli.resolvers import register_resolvers  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
TINY = (
    "model.d_model=32",
    "model.dropout=0.0",
    "data.batch_size=8",
    "data.max_length=64",
    "data.block_size=32",
    "data.train_windows_per_epoch=64",
    "data.eval_windows=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "extras.print_config=false",
    "callbacks.progress_bar=null",
    "task.baseline=null",  # no TF-IDF reference unless a test asks (task/baseline=tfidf_lr)
)


def tiny_except(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """TINY without the keys the overrides set themselves (`task/baseline` counts as
    `task.baseline`): a test's own choice wins, and a sweeper sees each key once."""
    keys = {o.lstrip("+~").split("=", 1)[0].replace("/", ".") for o in overrides}
    return [o for o in TINY if o.split("=", 1)[0] not in keys]


register_resolvers()


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One corpus cache for the session, inside pytest's tmp dir."""
    os.environ["LM_LAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def composer(out_dir: Path) -> Callable[..., DictConfig]:
    """compose("model=bilstm", "task=generate", ...) -> the config train.py would see, tiny,
    with its run dir under out_dir. `config_name="eval"` composes eval.py's config."""

    def _compose(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            extra = tiny_except(overrides) if tiny and config_name == "train" else ()
            cfg = hydra_compose(config_name, [*extra, *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out_dir / "run")
            cfg.paths.log_dir = str(out_dir / "logs")
            del cfg["hydra"]
        return cfg

    return _compose


@pytest.fixture
def compose(tmp_path: Path) -> Callable[..., DictConfig]:
    """`composer` writing under this test's tmp_path."""
    yield composer(tmp_path)
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def module_compose(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., DictConfig]:
    """`composer` for module-scoped fixtures: runs shared by the tests of one module."""
    yield composer(tmp_path_factory.mktemp("module"))
    GlobalHydra.instance().clear()


def require_shared_data(name: str) -> Path:
    """../shared/data/<name> (the data never lives in the repo). Where it is absent a developer's
    test skips, but under CI=true, where the folder always exists, it fails: a moved or missing
    folder must not turn tests into silent skips. Every test of the shared data uses this."""
    path = SHARED_DATA / name
    if not path.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} not found, and CI=true: CI always has ../shared/data")
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """shared_data("sst2") -> the folder, or a skip (a failure under CI=true): see above."""
    return require_shared_data


@pytest.fixture
def planted_csv(tmp_path: Path) -> Path:
    """A data=csv folder. train/validation (train's words reordered, so no text is in both):
    `good`/`bad` decide the label. test: every positive
    text holds `qqq`, every negative one `zzz`, tokens train never shows, and nothing else tells
    them apart: a model or baseline fitted on train alone cannot score above chance there."""
    root = tmp_path / "planted"
    root.mkdir()
    train = [("good film", "pos"), ("bad film", "neg"), ("good plot", "pos"), ("bad plot", "neg")]
    validation = [
        ("film good", "pos"),
        ("film bad", "neg"),
        ("plot good", "pos"),
        ("plot bad", "neg"),
    ]
    test = [("the film qqq", "pos")] * 4 + [("the film zzz", "neg")] * 4
    for name, rows in (("train", train * 6), ("validation", validation), ("test", test)):
        with (root / f"{name}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("text", "label"), *rows])
    return root


@pytest.fixture
def sst2_like(tmp_path: Path) -> Path:
    """An SST-2-shaped CSV folder (48 / 16 / 16 sentences, one cue word decides each label):
    for scripts that run whole tables (tests/scripts, tests/hf/test_finetune_real.py)."""
    words = {"positive": ["great", "fun", "moving"], "negative": ["dull", "bad", "flat"]}
    root = tmp_path / "sst2"
    root.mkdir()
    for split, n, first in (("train", 48, 0), ("validation", 16, 100), ("test", 16, 200)):
        labels = [("positive", "negative")[i % 2] for i in range(n)]
        rows = [(f"a {words[y][i % 3]} film number {first + i}", y) for i, y in enumerate(labels)]
        with (root / f"{split}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("text", "label"), *rows])
    return root


@pytest.fixture
def train_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """train_cli("-m", "model=a,b") runs `python train.py` in a subprocess, tiny and with its
    logs under tmp_path/logs; returns the finished process (stdout and stderr as text)."""

    def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        flags = [a for a in args if a.startswith("-")]  # e.g. -m: argparse wants them first
        given = [a for a in args if not a.startswith("-")]
        overrides = [*tiny_except(given), f"paths.log_dir={tmp_path / 'logs'}", *given]
        return subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *flags, *overrides],
            cwd=ROOT,
            env=os.environ | (env or {}),
            capture_output=True,
            text=True,
            timeout=600,
        )

    return _run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The documented commands (the longest module, ~5 min, two commands at a time) first: under
    `-n auto --dist loadscope` a worker starts them while the others share every other module,
    instead of the suite waiting on them at its end."""
    items.sort(key=lambda item: item.path.name != "test_docs_commands.py")
