"""`python -m lm_lab.cli.prepare <overrides>` prepares the corpus a training run then only reads."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.preparation.prepare import prepare
from lm_lab.data.sources.documents import TextFiles
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run_prepare(*overrides: str, cache: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "LM_LAB_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "lm_lab.cli.prepare", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_prepare_once_then_a_run_only_reads(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"{i}.md").write_text(f"document {i}: " + "lorem ipsum " * (i + 5))
    done = run_prepare(
        "task=generate",
        "data=text",
        f"data.root={corpus}",
        "tokenizer=char",
        cache=tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data setup took" in done.stdout + done.stderr
    monkeypatch.setattr(
        "lm_lab.data.preparation.prepare.build", lambda *a: pytest.fail("prepared twice")
    )
    datamodule = TextDataModule(
        TextFiles(str(corpus)),
        CharTokenizer(),
        "generate",
        block_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    datamodule.setup()
    assert datamodule.stats["train/documents"] + datamodule.stats["validation/documents"] == 30


def test_a_bad_override_is_one_line(tmp_path):
    done = run_prepare(
        "task=generate", "data=text", f"data.root={tmp_path / 'absent'}", cache=tmp_path / "cache"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: data.root=")


# Loaded by the interpreter the test starts (its folder is put first on PYTHONPATH): once the
# first shard is written, the preparation dawdles, so the signal surely lands mid-way.
SLOW_SHARDS = """
import os
import time
from pathlib import Path

from lm_lab.data.preparation import shards

add = shards.ShardWriter.add


def add_then_wait(self, *args):
    written = add(self, *args)
    Path(os.environ["LM_LAB_TEST_UNDER_WAY"]).touch()
    time.sleep(60)
    return written


shards.ShardWriter.add = add_then_wait
"""


def corpus_of(folder: Path, n: int = 40) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"{i}.md").write_text(f"document {i}: " + "lorem ipsum dolor " * (i + 50))
    return folder


PREPARE = ("-m", "lm_lab.cli.prepare")
TRAIN = ("train.py", "paths.log_dir={tmp}", "logger=[]")  # prepares in the datamodule setup


@pytest.mark.parametrize(
    ("command", "signum", "status"),
    [(PREPARE, signal.SIGINT, 130), (PREPARE, signal.SIGTERM, 143), (TRAIN, signal.SIGTERM, 143)],
    ids=["prepare-SIGINT", "prepare-SIGTERM", "train.py-SIGTERM"],
)
def test_a_signal_mid_preparation_is_one_line_and_publishes_nothing(
    tmp_path, command, signum, status
):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_SHARDS)
    under_way, cache = tmp_path / "under_way", tmp_path / "cache"
    env = os.environ | {
        "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT / 'src'}",
        "LM_LAB_CACHE": str(cache),
        "LM_LAB_TEST_UNDER_WAY": str(under_way),
    }
    overrides = ["task=generate", "data=text", f"data.root={corpus_of(tmp_path / 'corpus')}"]
    proc = subprocess.Popen(
        [sys.executable, *(c.format(tmp=tmp_path) for c in command), *overrides, "tokenizer=char"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not under_way.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (cache / "corpora").is_dir() and list((cache / "corpora").glob("*.tmp-*"))
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = stderr.strip().splitlines()
    assert proc.returncode == status, stderr[-2000:]
    name = signal.Signals(signum).name
    assert lines[-1].startswith(f"interrupted by {name} while preparing the corpus: nothing half-")
    assert "Traceback" not in stderr
    assert not list(cache.rglob("manifest.json")) and not list(cache.rglob("*.tmp-*"))


def test_lm_lab_cache_that_is_a_file_is_one_line(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    done = run_prepare(
        "task=generate", "data=text", f"data.root={corpus_of(tmp_path / 'c', 5)}", cache=cache
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: LM_LAB_CACHE (paths.cache_dir={cache}): a file, not a folder; point "
        "LM_LAB_CACHE at a writable folder with room for the corpus (or set "
        "data.cache_dir=null for a temporary one)"
    )


@pytest.fixture
def read_only(tmp_path) -> Iterator[Callable[[Path], None]]:
    """Makes folders read-only, even for root (`chattr +i`), and writable again afterwards."""
    frozen: list[Path] = []

    def freeze(folder: Path) -> None:
        if os.geteuid() != 0:
            folder.chmod(0o555)
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("root, and chattr +i is not allowed here: nothing is read-only")
        frozen.append(folder)

    yield freeze
    for folder in frozen:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_lm_lab_cache_is_one_config_error(tmp_path, read_only):
    """The same ConfigError as above, so the same one line (checked in-process: no need to pay
    for another interpreter)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    read_only(cache)
    with pytest.raises(ConfigError) as err:
        prepare(TextFiles(corpus_of(tmp_path / "c")), CharTokenizer(), cache)
    assert str(err.value).startswith(
        f"LM_LAB_CACHE (paths.cache_dir={cache}): cannot write {cache / 'corpora'} ("
    )
    assert str(err.value).endswith(
        "; point LM_LAB_CACHE at a writable folder with room for the "
        "corpus (or set data.cache_dir=null for a temporary one)"
    )


def test_a_read_only_cache_that_holds_the_corpus_still_serves_it(tmp_path, read_only):
    corpus = corpus_of(tmp_path / "corpus")

    def prepared_folder() -> Path:
        dm = TextDataModule(
            TextFiles(corpus),
            CharTokenizer(),
            "generate",
            block_size=16,
            cache_dir=str(tmp_path / "cache"),
        )
        dm.setup()
        return dm._prepared.folder

    first = prepared_folder()
    for alias in (tmp_path / "cache" / "corpora").iterdir():
        if alias.is_symlink():
            alias.unlink()  # so the second run wants to write it again
    read_only(tmp_path / "cache" / "corpora")
    assert prepared_folder() == first
