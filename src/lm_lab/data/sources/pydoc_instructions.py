"""Built-in instruction data (`data=pydoc_sft`): conversations made from this Python's
standard-library docstrings, the records `stdlib_docs` collects for the pydoc corpus.

Three kinds of pair come out of one docstring:
- `qa`: "What does `json.dumps` do?" -> the first sentence of its docstring;
- `summarize`: the docstring without its summary line -> that line (PEP 257 docstrings only:
  a one-line summary, a blank line, a body);
- `classify`: which part of the standard library (`stdlib_docs.FAMILIES`) the docstring comes
  from, the choices listed in the prompt -> the family name.

Splits are drawn per top-level module (a hash of seed and name), so no module, nor any of its
submodules, has docstrings in two splits: a model is tested on modules it never read. Each
split is capped (`train_size`, ...) with equal shares per kind, taken in a fixed hash order.
The collected records are cached as JSON, keyed by the Python version and the extraction code.
"""

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lm_lab.data.sources import stdlib_docs
from lm_lab.data.sources.conversations import Conversation, check_splits_disjoint
from lm_lab.data.sources.label_instructions import choice_prompt, pair
from lm_lab.data.sources.pydoc_corpus import (
    SPLITS,
    cache_json,
    check_fractions,
    code_fingerprint,
    default_cache_dir,
    python_tag,
    unit_hash,
)
from lm_lab.data.sources.split import check_disjoint
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

RECORDS_VERSION = 1  # bump when the cached JSON layout changes
CLASSIFY_QUESTION = "Which part of the Python standard library does this docstring come from?"
# a call signature standing in for a summary: "B.count(sub[, start[, end]]) -> int"
SIGNATURE = re.compile(r"^[\w.]+\(.*\)|\s->\s")
# a sentence ends at . ! ? before the end or before a space and a capital ("e.g. zip" goes on)
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`'\"(]|$)")


@dataclass(frozen=True)
class Doc:
    """One labelled docstring: where it comes from ("json.dumps"), its text, its family."""

    origin: str
    text: str
    family: str

    @property
    def module(self) -> str:
        """The top-level module: the unit of the split."""
        return self.origin.split(".")[0]


def first_paragraph(text: str) -> str:
    """The lines before the first blank line, joined by single spaces."""
    return " ".join(text.strip().split("\n\n")[0].split())


def first_sentence(text: str) -> str:
    """The docstring's first sentence, its end mark kept; the whole first paragraph when no
    sentence ends inside it."""
    paragraph = first_paragraph(text)
    end = SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def summary_and_body(text: str) -> tuple[str, str] | None:
    """(summary line, body) of a PEP 257 docstring, else None: a summary wrapped over two lines
    would make its first line half a sentence."""
    lines = text.strip().split("\n")
    if len(lines) < 3 or lines[1].strip():
        return None
    body = "\n".join(lines[2:]).strip()
    return (lines[0].strip(), body) if body else None


def is_generated(line: str) -> bool:
    """A first line that only repeats a call signature (C functions' docstrings)."""
    return bool(SIGNATURE.search(line))


def qa(doc: Doc, families: Sequence[str], max_answer_chars: int) -> Conversation | None:
    answer = first_sentence(doc.text)
    if not answer or is_generated(answer) or len(answer) > max_answer_chars:
        return None
    return pair(f"What does `{doc.origin}` do?", answer, "qa")


def summarize(doc: Doc, families: Sequence[str], max_answer_chars: int) -> Conversation | None:
    parts = summary_and_body(doc.text)
    if parts is None or is_generated(parts[0]) or len(parts[0]) > max_answer_chars:
        return None
    prompt = f"Summarize this documentation in one line.\n\n{parts[1]}"
    return pair(prompt, parts[0], "summarize")


def classify(doc: Doc, families: Sequence[str], max_answer_chars: int) -> Conversation | None:
    if is_generated(doc.text.split("\n", 1)[0]):
        return None
    return pair(choice_prompt(CLASSIFY_QUESTION, doc.text, families), doc.family, "classify")


Builder = Callable[[Doc, Sequence[str], int], Conversation | None]
KINDS: dict[str, Builder] = {"qa": qa, "summarize": summarize, "classify": classify}


class PydocInstructions:
    """SFT source of the built-in instruction data: `load_conversations()` -> {"train",
    "validation", "test": [Conversation]}, every conversation one user turn and one assistant
    turn, its `kind` one of `kinds`."""

    name = "pydoc_sft"

    def __init__(
        self,
        seed: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        train_size: int = 1500,
        validation_size: int = 150,
        test_size: int = 150,
        kinds: Sequence[str] = tuple(KINDS),
        min_chars: int = 40,
        max_chars: int = 1000,
        max_answer_chars: int = 300,
        cache_dir: str | Path | None = None,
    ) -> None:
        check_fractions(val_fraction, test_fraction, "modules for training")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ConfigError(f"data.source.kinds={list(kinds)}: choose from {list(KINDS)}")
        sizes = {"train_size": train_size, "validation_size": validation_size}
        for key, value in (sizes | {"test_size": test_size}).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < len(kinds):
                raise ConfigError(
                    f"data.source.{key}={value}: must be an integer >= {len(kinds)} (one "
                    "conversation per kind at least)"
                )
        self.seed = seed
        self.fractions = {"test": test_fraction, "validation": val_fraction}
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.kinds = list(kinds)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.max_answer_chars = max_answer_chars
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def load_conversations(self) -> dict[str, list[Conversation]]:
        docs = self.split_docs(self.docs())
        families = sorted({doc.family for split in docs.values() for doc in split})
        splits = {name: self.conversations(name, split, families) for name, split in docs.items()}
        check_splits_disjoint(splits, "pydoc_sft")
        log.info(describe(splits))
        return splits

    def docs(self) -> list[Doc]:
        """Labelled docstrings within the length bounds, from the cache or collected anew."""
        path = self.cache_dir / (
            f"pydoc-records-v{RECORDS_VERSION}-{python_tag()}-{code_fingerprint()}"
            f"-min{self.min_chars}.json"
        )
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            records = stdlib_docs.collect_in_subprocess(self.min_chars)
            cache_json(path, records, "pydoc_sft records")
        return [
            Doc(origin, text, family)
            for origin, text, family in records
            if family is not None and len(text) <= self.max_chars
        ]

    def split_docs(self, docs: list[Doc]) -> dict[str, list[Doc]]:
        """Each top-level module's docstrings go to one split, drawn by the module's hash."""
        splits: dict[str, list[Doc]] = {name: [] for name in SPLITS}
        for doc in docs:
            u = unit_hash(doc.module, self.seed)
            test, val = self.fractions["test"], self.fractions["validation"]
            name = "test" if u < test else "validation" if u < test + val else "train"
            splits[name].append(doc)
        check_disjoint(
            {name: {doc.module for doc in split} for name, split in splits.items()},
            lambda first, second, module: f"pydoc_sft: module {module} in {first} and {second}",
        )
        return splits

    def conversations(self, split: str, docs: list[Doc], families: list[str]) -> list[Conversation]:
        """Up to the split's size, an equal share per kind (the first kinds take the rest),
        each kind's docstrings in the order of a second hash: a capped split is a sample."""
        share, extra = divmod(self.sizes[split], len(self.kinds))
        ordered = sorted(docs, key=lambda doc: unit_hash(doc.origin, self.seed + 1))
        chosen: list[Conversation] = []
        for i, kind in enumerate(self.kinds):
            made = (KINDS[kind](doc, families, self.max_answer_chars) for doc in ordered)
            usable = [conversation for conversation in made if conversation is not None]
            chosen += usable[: share + (i < extra)]
        if not chosen:
            raise ConfigError(f"pydoc_sft: no conversation in the {split} split; raise its size")
        return chosen


def describe(splits: dict[str, list[Conversation]]) -> str:
    """Conversations per split and kind, one line per split."""
    lines = []
    for name, split in splits.items():
        counts = Counter(conversation.kind for conversation in split)
        kinds = ", ".join(f"{kind} {n}" for kind, n in counts.items())
        lines.append(f"pydoc_sft {name}: {len(split)} conversations ({kinds})")
    return "\n".join(lines)
