"""The built-in offline data set: this Python's standard-library docstrings, labelled by module
family (see `stdlib_docs.FAMILIES`), plus the pydoc help topics for language modelling.

Splits are assigned by a hash of (seed, text), so they are disjoint, stable across runs and
machines with the same Python, and independent of collection order. The built corpus is cached
as JSON, keyed by everything that shapes it, so only the first build pays for the imports.
"""

import hashlib
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

from lm_lab.data.sources import stdlib_docs
from lm_lab.data.sources.split import Split
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

SPLITS = ("train", "validation", "test")
CORPUS_VERSION = 1  # bump when the cached JSON layout changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("LM_LAB_CACHE") or Path.home() / ".cache" / "lm_lab")


def unit_hash(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, text): the split draw and the order within a split."""
    digest = hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def code_fingerprint() -> str:
    """Changes whenever the mapping or the extraction code changes, invalidating old caches."""
    return hashlib.sha1(Path(stdlib_docs.__file__).read_bytes()).hexdigest()[:8]


def check_fractions(val_fraction: float, test_fraction: float, left: str) -> None:
    """The held-out shares of a hash split: each in (0, 1), and `left` (what train keeps)
    must remain."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ConfigError(f"data.source.{key}={value}: must lie strictly between 0 and 1")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"data.source.val_fraction + test_fraction = {val_fraction + test_fraction}: "
            f"must be below 1 to leave {left}; lower them"
        )


class PydocCorpus:
    """Source of the built-in corpus: `load()` -> {"train", "validation", "test": Split}.

    Docstrings carry their family label; pydoc topics carry label None, so classification drops
    them and language modelling keeps them.
    """

    name = "pydoc"

    def __init__(
        self,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        cache_dir: str | Path | None = None,
        min_chars: int = 40,
    ) -> None:
        check_fractions(val_fraction, test_fraction, "training data")
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.min_chars = min_chars

    @property
    def cache_path(self) -> Path:
        key = (
            f"pydoc-v{CORPUS_VERSION}-{python_tag()}-{code_fingerprint()}-seed{self.seed}"
            f"-val{self.val_fraction}-test{self.test_fraction}-min{self.min_chars}"
        )
        return self.cache_dir / f"{key}.json"

    def load(self) -> dict[str, Split]:
        started = time.perf_counter()
        splits = self._read_cache()
        cached = splits is not None
        if splits is None:
            records = stdlib_docs.collect_in_subprocess(self.min_chars)
            splits = self.assign_splits([(text, family) for _, text, family in records])
            self._write_cache(splits)
        how = "from cache" if cached else "built"
        seconds = time.perf_counter() - started
        log.info(f"pydoc corpus {how} in {seconds:.2f}s ({self.cache_path})")
        log.info(describe(splits))
        return splits

    def assign_splits(self, items: list[tuple[str, str | None]]) -> dict[str, Split]:
        """Each text goes to test, validation or train by its hash; each split is ordered by a
        second hash, so any prefix (e.g. a label budget) is a random sample."""
        groups: dict[str, list[tuple[float, str, str | None]]] = {s: [] for s in SPLITS}
        for text, label in items:
            u = unit_hash(text, self.seed)
            if u < self.test_fraction:
                split = "test"
            elif u < self.test_fraction + self.val_fraction:
                split = "validation"
            else:
                split = "train"
            groups[split].append((unit_hash(text, self.seed + 1), text, label))
        return {s: self._split(s, sorted(group)) for s, group in groups.items()}

    def _split(self, name: str, group: list[tuple[float, str, str | None]]) -> Split:
        texts = [text for _, text, _ in group]
        labels = [label for _, _, label in group]
        return Split(texts, labels, origin=f"pydoc corpus ({name})", stats={"read": len(texts)})

    def _read_cache(self) -> dict[str, Split] | None:
        """The cached splits, or None when absent or unreadable (then it is rebuilt)."""
        try:
            state = json.loads(self.cache_path.read_text(encoding="utf-8"))
            return {s: self._split(s, [(0.0, t, lab) for t, lab in state[s]]) for s in SPLITS}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_cache(self, splits: dict[str, Split]) -> None:
        state = {
            s: list(zip(split.texts, split.labels, strict=True)) for s, split in splits.items()
        }
        cache_json(self.cache_path, state, "pydoc corpus")


def python_tag() -> str:
    """The interpreter in a cache key: another Python ships other docstrings."""
    return f"{platform.python_implementation().lower()}{platform.python_version()}"


def cache_json(path: Path, state: object, what: str) -> None:
    """Written to a temporary name and renamed, so concurrent runs never read half a file; a
    cache that cannot be written is only logged (the next run builds it again)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        log.info(f"{what}: not cached ({err}); it will be rebuilt next time")


def describe(splits: dict[str, Split]) -> str:
    """A small table: texts per split, unlabelled (topics) and per label."""
    counts = {s: Counter(split.labels or []) for s, split in splits.items()}
    labels = sorted({lab for c in counts.values() for lab in c if lab is not None})
    header = ["split", "texts", "unlabelled", *labels]
    rows = [header] + [
        [s, str(len(splits[s].texts)), str(c[None]), *(str(c[lab]) for lab in labels)]
        for s, c in counts.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows
    )
