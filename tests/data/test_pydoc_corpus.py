"""The built-in corpus: built from this Python's docs, split by hash, labelled by the mapping,
cached. Built once per test module: the first build imports a few hundred stdlib modules."""

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from lm_lab.data.sources import PydocCorpus, Split, stdlib_docs
from lm_lab.utils.errors import ConfigError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pydoc_cache")


@pytest.fixture(scope="module")
def corpus(cache_dir: Path) -> dict[str, Split]:
    return PydocCorpus(seed=0, cache_dir=cache_dir).load()


def test_corpus_has_thousands_of_labelled_docstrings_in_every_family(corpus):
    train = Counter(corpus["train"].labels)
    assert sum(n for label, n in train.items() if label) > 2000
    assert set(train) - {None} == set(stdlib_docs.FAMILIES)
    labelled = {label: n for label, n in train.items() if label}
    assert max(labelled.values()) < 4 * min(labelled.values())  # balanced enough
    assert train[None] > 0  # pydoc topics, for language modelling only


def test_splits_are_disjoint_and_sized_by_the_fractions(corpus):
    texts = {name: set(split.texts) for name, split in corpus.items()}
    assert not (texts["train"] & texts["validation"] or texts["train"] & texts["test"])
    assert not texts["validation"] & texts["test"]
    total = sum(len(t) for t in texts.values())
    for name in ("validation", "test"):
        assert 0.07 < len(texts[name]) / total < 0.13


def test_same_seed_gives_same_splits_other_seed_differs(corpus, cache_dir, tmp_path):
    rebuilt = PydocCorpus(seed=0, cache_dir=tmp_path).load()  # fresh build, no cache
    assert {n: s.texts for n, s in rebuilt.items()} == {n: s.texts for n, s in corpus.items()}
    other = PydocCorpus(seed=1, cache_dir=cache_dir).load()
    assert set(other["validation"].texts) != set(corpus["validation"].texts)


def test_labels_follow_the_family_mapping():
    assert stdlib_docs.family_of("asyncio.tasks") == "concurrency"
    assert stdlib_docs.family_of("json") == "data" and stdlib_docs.family_of("tkinter") is None
    families = [f for f, modules in stdlib_docs.FAMILIES.items() for _ in modules]
    assert len(families) == len(stdlib_docs.MODULE_FAMILY)  # no module in two families
    records = {origin: family for origin, _, family in stdlib_docs.collect_in_subprocess()}
    assert records["json.dumps"] == "data"
    assert records["socket.SocketIO"] == "network"
    assert records["math.acos"] == "numeric"
    assert not any(o.startswith(("tkinter", "idlelib", "test.")) for o in records)


def test_docs_point_to_the_file_that_holds_the_family_mapping():
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "data.md").read_text()
    paragraph = next(p for p in text.split("\n\n") if "*family*" in p)
    (path,) = re.findall(r"`(src/lm_lab/[\w/]+\.py)`", paragraph)
    assert "\nFAMILIES: dict" in (root / path).read_text()


def test_second_load_comes_from_the_cache(corpus, cache_dir):
    source = PydocCorpus(seed=0, cache_dir=cache_dir)
    assert source.cache_path.is_file()
    started = time.perf_counter()
    again = source.load()
    assert time.perf_counter() - started < 1.0
    assert again["train"].texts == corpus["train"].texts
    assert again["train"].labels == corpus["train"].labels


def test_cache_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LM_LAB_CACHE", str(tmp_path))
    assert PydocCorpus().cache_path.parent == tmp_path


def test_bad_fractions_are_config_errors():
    with pytest.raises(ConfigError, match="data.source.val_fraction"):
        PydocCorpus(val_fraction=0.0)
    with pytest.raises(ConfigError, match="must be below 1"):
        PydocCorpus(val_fraction=0.5, test_fraction=0.5)
