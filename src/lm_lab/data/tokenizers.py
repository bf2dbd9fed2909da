"""Tokenizers: characters, UTF-8 bytes and byte-level BPE behind one small API.

Every tokenizer serialises to JSON (`to_json`, with a "kind" field) so a checkpoint carries its
own tokenizer and `from_json` rebuilds it without the training data. Id 0 is padding in all
three, and `decode` drops it.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers
from torch import Tensor

from lm_lab.utils.errors import ConfigError


class Tokenizer:
    """The shared API; subclasses set `kind` and implement the text <-> id mapping."""

    kind: str = ""
    pad_id: int = 0
    unk_id: int | None = None  # the id unseen characters map to; None: every text is encodable
    train_max_chars: int | None = None  # fitting reads at most this much of a corpus; None = all

    @property
    def is_fitted(self) -> bool:
        return True

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def fit(self, texts: Iterable[str]) -> "Tokenizer":
        return self

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once; BPE overrides it to tokenize in parallel."""
        return [self.encode(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def count_unknown(self, ids: Sequence[int] | Tensor) -> int:
        """How many of `ids` stand for characters the tokenizer never saw: text it cannot model,
        which data reports and generation logs count instead of hiding (0 without an UNK id)."""
        if self.unk_id is None:
            return 0
        if isinstance(ids, Tensor):  # a token stream
            return int(ids.eq(self.unk_id).sum())
        return list(ids).count(self.unk_id)

    def state(self) -> dict[str, Any]:
        """What `to_json` stores besides the kind."""
        return {}

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.state()}, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")

    def __repr__(self) -> str:
        size = self.vocab_size if self.is_fitted else "unfitted"
        return f"{type(self).__name__}(vocab_size={size})"

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train_texts) first")


class CharTokenizer(Tokenizer):
    """One id per character seen in the training texts; 0 is pad, 1 stands for unseen ones."""

    kind = "char"
    pad_id = 0
    unk_id = 1
    UNK_TEXT = "\ufffd"  # what an unknown id decodes to
    _N_SPECIAL = 2

    def __init__(self, chars: list[str] | None = None, train_max_chars: int | None = None) -> None:
        self._set_chars(chars or [])
        self.train_max_chars = train_max_chars

    def _set_chars(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self._index = {c: i + self._N_SPECIAL for i, c in enumerate(self.chars)}

    @property
    def is_fitted(self) -> bool:
        return bool(self.chars)

    @property
    def vocab_size(self) -> int:
        return self._N_SPECIAL + len(self.chars)

    def fit(self, texts: Iterable[str]) -> "CharTokenizer":
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        self._set_chars(sorted(seen))
        return self

    def encode(self, text: str) -> list[int]:
        self._require_fitted()
        index, unk = self._index, self.unk_id
        return [index.get(c, unk) for c in text]

    def decode(self, ids: list[int]) -> str:
        n, chars = self._N_SPECIAL, self.chars
        return "".join(
            chars[i - n] if n <= i < len(chars) + n else self.UNK_TEXT
            for i in ids
            if i != self.pad_id
        )

    def state(self) -> dict[str, Any]:
        return {"chars": self.chars}


class ByteTokenizer(Tokenizer):
    """The 256 UTF-8 byte values plus pad: needs no fitting and never meets unknown input."""

    kind = "byte"
    pad_id = 256

    @property
    def vocab_size(self) -> int:
        return 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class IdTokenizer(Tokenizer):
    """Token ids used as they are, for synthetic tasks that are drawn as ids (MQAR, induction):
    text is ids written as decimal numbers separated by spaces; 0 is pad."""

    kind = "ids"
    pad_id = 0

    def __init__(self, vocab_size: int) -> None:
        self._vocab_size = vocab_size

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        return [int(token) for token in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(str(i) for i in ids if i != self.pad_id)

    def state(self) -> dict[str, Any]:
        return {"vocab_size": self._vocab_size}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (HF `tokenizers`): any text encodes without unknowns and decodes back
    exactly, because merges are learnt over UTF-8 bytes, not characters."""

    kind = "bpe"
    pad_id = 0
    PAD_TOKEN = "<pad>"

    def __init__(
        self, vocab_size: int = 2000, min_frequency: int = 2, train_max_chars: int | None = None
    ) -> None:
        if vocab_size < 257 + 1:
            raise ConfigError(
                f"tokenizer.vocab_size={vocab_size}: byte-level BPE needs at least 258 "
                "(256 bytes + pad + 1 merge); raise it"
            )
        self.target_vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.train_max_chars = train_max_chars
        self._tok: HFTokenizer | None = None

    @property
    def is_fitted(self) -> bool:
        return self._tok is not None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size() if self._tok is not None else self.target_vocab_size

    def fit(self, texts: Iterable[str]) -> "BPETokenizer":
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.target_vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=[self.PAD_TOKEN],  # first special token -> id 0
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        self._set(tok)
        return self

    def _set(self, tok: HFTokenizer) -> None:
        if tok.token_to_id(self.PAD_TOKEN) != self.pad_id:
            raise ValueError(f"BPE tokenizer must have {self.PAD_TOKEN} at id {self.pad_id}")
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        self._require_fitted()
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self._require_fitted()
        encoded = self._tok.encode_batch_fast(texts, add_special_tokens=False)  # no offsets
        return [e.ids for e in encoded]

    def decode(self, ids: list[int]) -> str:
        self._require_fitted()
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def state(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "vocab_size": self.target_vocab_size,
            "min_frequency": self.min_frequency,
            "tokenizer": self._tok.to_str(),
        }


def from_json(s: str) -> Tokenizer:
    """Rebuild a tokenizer from `to_json` output (e.g. the copy stored in a checkpoint)."""
    state = json.loads(s)
    kind = state.pop("kind", None)
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "ids":
        return IdTokenizer(state["vocab_size"])
    if kind == "bpe":
        tok = BPETokenizer(state["vocab_size"], state["min_frequency"])
        tok._set(HFTokenizer.from_str(state["tokenizer"]))
        return tok
    raise ValueError(f"tokenizer JSON has kind={kind!r}; expected one of char, byte, ids, bpe")


def load(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} not found; pass the tokenizer.json of a run")
    return from_json(path.read_text(encoding="utf-8"))
