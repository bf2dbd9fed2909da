"""`python -m lm_lab.cli.prepare <overrides>` prepares the corpus a training run then only reads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_lab.data.datamodule import TextDataModule
from lm_lab.data.documents import TextFiles
from lm_lab.data.tokenizers import CharTokenizer

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
    monkeypatch.setattr("lm_lab.data.prepare.build", lambda *a: pytest.fail("prepared twice"))
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
