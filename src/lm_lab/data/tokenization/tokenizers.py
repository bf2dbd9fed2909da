"""Tokenizers: characters, UTF-8 bytes and byte-level BPE behind one small API.

Every tokenizer serialises to JSON (`to_json`, with a "kind" field) so a checkpoint carries its
own tokenizer and `from_json` rebuilds it without the training data. Id 0 is padding in lm_lab's
own ones, and `decode` drops it.

In a run dir, `save` writes `tokenizer.json`: for BPE and pretrained tokenizers the Hugging Face
file itself (`tokenizers.Tokenizer.from_file` loads it), with lm_lab's settings beside it in
`lm_lab_tokenizer.json`; char, byte and ids tokenizers keep their own `to_json` format there.
`load` reads both layouts, and the older single-file wrapper of BPE.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers
from torch import Tensor

from lm_lab.data.tokenization import chat
from lm_lab.utils.errors import ConfigError

SETTINGS_FILE = "lm_lab_tokenizer.json"  # lm_lab's settings beside a Hugging Face tokenizer.json


class Tokenizer:
    """The shared API; subclasses set `kind` and implement the text <-> id mapping."""

    kind: str = ""
    pad_id: int = 0
    eos_id: int | None = None  # ends generation; lm_lab's own tokenizers have none
    chat_template: str | None = None  # a pretrained model's Jinja chat template (see chat.py)
    special_tokens: dict[str, str] = {}  # bos_token, eos_token, ...: the names templates read
    bos_ids: list[int] = []  # put before a whole text (a pretrained model's BOS), else nothing
    unk_id: int | None = None  # the id unseen characters map to; None: every text is encodable
    train_max_chars: int | None = None  # fitting reads at most this much of a corpus; None = all

    @property
    def is_fitted(self) -> bool:
        return True

    @property
    def eos_ids(self) -> list[int]:
        """Every id that ends generation, `eos_id` first; [] without EOS."""
        return [] if self.eos_id is None else [self.eos_id]

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
        """`path` (tokenizer.json) in the format described in the module docstring."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"kind": self.kind, **self.state()}
        hf = state.pop("tokenizer", None)
        if hf is None:
            path.write_text(self.to_json(), encoding="utf-8")
            return
        path.write_text(hf, encoding="utf-8")
        settings = json.dumps(state, ensure_ascii=False, indent=1)
        (path.parent / SETTINGS_FILE).write_text(settings, encoding="utf-8")

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


class PretrainedTokenizer(Tokenizer):
    """A pretrained model's own tokenizer (its tokenizer.json), with its special tokens: BOS
    before a text when its tokenizer_config says `add_bos_token`, EOS as generation stop, and a
    pad id even when the model has none (its pad token, else a spare embedding row past the
    tokenizer's vocabulary, else unk, else EOS). `vocab_size` is the embedding's row count when
    the folder has a config.json (it may exceed the tokenizer's; never the reverse)."""

    kind = "hf"

    def __init__(self, path: str | Path | None = None, state: dict[str, Any] | None = None) -> None:
        if state is None:
            state = _pretrained_state(_tokenizer_folder(path))
        self.state_ = state
        self._tok = HFTokenizer.from_str(state["tokenizer"])
        self._vocab_size = state["vocab_size"]
        self.pad_id, self.eos_id = state["pad_id"], state["eos_id"]
        self.bos_ids = [state["bos_id"]] if state["add_bos"] else []
        self._eos_ids = state.get("eos_ids")  # absent in checkpoints written before it
        self.chat_template = state.get("chat_template")
        self.special_tokens = state.get("special_tokens", {})

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eos_ids(self) -> list[int]:
        """The folder's declared EOS ids (config.json, generation_config.json), eos_id first."""
        return super().eos_ids if self._eos_ids is None else self._eos_ids

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i != self.pad_id], skip_special_tokens=True)

    def state(self) -> dict[str, Any]:
        return self.state_


def _tokenizer_folder(path: str | Path | None) -> Path:
    """`tokenizer.path`: a model folder or its tokenizer.json."""
    if path is None:
        raise ConfigError("tokenizer=hf needs tokenizer.path=<model folder or tokenizer.json>")
    path = Path(path)
    folder = path.parent if path.name == "tokenizer.json" else path
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"tokenizer.path={path}: no tokenizer.json there")
    return folder


def _special(folder: Path) -> dict[str, Any]:
    """Special-token settings: special_tokens_map.json, then tokenizer_config.json over it,
    token names as plain strings (they may be {"content": ...} dicts)."""
    merged: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json", "config.json"):
        if (folder / name).is_file():
            merged |= {
                k: v["content"] if isinstance(v, dict) and "content" in v else v
                for k, v in json.loads((folder / name).read_text(encoding="utf-8")).items()
                if k.endswith(("_token", "_token_id", "add_bos_token")) or k == "vocab_size"
            }
    return merged


def _pretrained_state(folder: Path) -> dict[str, Any]:
    tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    cfg, n_tokens = _special(folder), tok.get_vocab_size(with_added_tokens=True)
    vocab = cfg.get("vocab_size") or n_tokens
    if n_tokens > vocab:
        raise ConfigError(
            f"tokenizer.path={folder}: the tokenizer has {n_tokens} tokens but the model's "
            f"embedding only {vocab} rows (config.json vocab_size); use the model's own tokenizer"
        )

    def token_id(name: str) -> int | None:
        given = cfg.get(f"{name}_token_id")
        given = given[0] if isinstance(given, list) else given
        token = cfg.get(f"{name}_token")
        return given if given is not None else (tok.token_to_id(token) if token else None)

    eos, unk = token_id("eos"), token_id("unk")
    names = {k: v for k, v in cfg.items() if k.endswith("_token") and isinstance(v, str)}
    spare = n_tokens if n_tokens < vocab else None
    pad = next(i for i in (token_id("pad"), spare, unk, eos, 0) if i is not None)
    return {
        "tokenizer": tok.to_str(),
        "vocab_size": vocab,
        "pad_id": pad,
        "eos_id": eos,
        "bos_id": token_id("bos"),
        "add_bos": _adds_bos(tok, cfg.get("add_bos_token"), token_id("bos")),
        "eos_ids": chat.read_eos_ids(folder, eos),
        "chat_template": chat.read_template(folder),
        "special_tokens": names,  # bos_token, eos_token, ...: a chat template reads them
        "settings": chat.tokenizer_settings(folder),  # written back by an export
    }


def _adds_bos(tok: HFTokenizer, flag: bool | None, bos: int | None) -> bool:
    """tokenizer_config's `add_bos_token` when it says; else whether the tokenizer's own
    post-processor puts BOS first (Llama 3 declares it only there)."""
    if bos is None:
        return False
    if flag is not None:
        return bool(flag)
    ids = tok.encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == bos


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
    if kind == "hf":
        return PretrainedTokenizer(state=state)
    raise ValueError(f"tokenizer JSON has kind={kind!r}; expected one of char, byte, ids, bpe, hf")


def load(path: str | Path) -> Tokenizer:
    """A run dir's tokenizer.json (with its lm_lab_tokenizer.json when there is one)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} not found; pass the tokenizer.json of a run")
    text, settings = path.read_text(encoding="utf-8"), path.parent / SETTINGS_FILE
    if "kind" in json.loads(text) or not settings.is_file():
        return from_json(text)  # lm_lab's own format, or a run dir written before the split
    return from_json(
        json.dumps(json.loads(settings.read_text(encoding="utf-8")) | {"tokenizer": text})
    )
