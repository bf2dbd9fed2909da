"""Sampling from a `LanguageModel`: greedy, temperature, top-k, top-p, on a batch of prompts.

The prompt is encoded once and every new token costs one `LanguageModel.step` of one token:
attention layers keep their keys and values, LSTM layers their (h, c). Prompts of unequal length
are LEFT-padded, so every row's next token sits in the same column; `n_pad` tells the encoders
which columns are padding. `use_cache=False` recomputes the whole sequence at every token, the
reference that cached generation must equal.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.utils.errors import ConfigError

if TYPE_CHECKING:  # a LightningModule: generate.py checks its settings with this module first
    from lm_lab.tasks.language_model import LanguageModel


def is_number(value: object) -> bool:
    """A real int or float; True/False are ints to Python but never a sampling value."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_count(value: object) -> bool:
    """An int that is not a bool (`top_k=true` is no count of tokens)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Fail fast on values the sampler cannot honour, naming the key to change. A NaN
    temperature would sample from NaN probabilities and a string would fail deep in torch."""
    if not is_count(max_new_tokens) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens}: must be an integer >= 1")
    if not is_number(temperature) or not 0 <= temperature < math.inf:
        raise ConfigError(f"temperature={temperature}: must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and (not is_count(top_k) or top_k < 1):
        raise ConfigError(f"top_k={top_k}: must be an integer >= 1, or null to keep every token")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise ConfigError(f"top_p={top_p}: must be in (0, 1], or null to keep every token")


def check_length(model: "LanguageModel", prompt_len: int, max_new_tokens: int) -> None:
    """A learned-position model knows only `max_len` positions: refuse before any work."""
    max_len = model.backbone.encoder.max_len
    needed = prompt_len + max_new_tokens - 1  # the last new token is never fed back
    if max_len is not None and needed > max_len:
        raise ConfigError(
            f"max_new_tokens={max_new_tokens}: a {prompt_len}-token prompt plus {max_new_tokens} "
            f"new tokens needs {needed} positions, but this model (positions=learned) was built "
            f"for model.max_len={max_len}; lower max_new_tokens or shorten the prompt"
        )


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor | None]:
    """Token ids (B, T) with each prompt right-aligned, and the pad count per row (B,), or None
    when all prompts have the same length (the encoders' fast path)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("prompt: every prompt must encode to at least one token")
    T = max(map(len, prompts))
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, T - len(prompt) :] = torch.tensor(prompt)
    n_pad = torch.tensor([T - len(p) for p in prompts])  # (B,)
    return ids, (n_pad if n_pad.any() else None)


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """logits (B, V) with -inf outside the top k tokens and outside the smallest set whose
    probability reaches top_p (the most likely token always stays)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits  # (B, V)


def next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """One token id per row (B,) from logits (B, V); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@dataclass
class Cache:
    """One conversation's model state across turns (a single row): the ids the model has read
    and the state after them, so that a turn feeds only the ids it adds to the conversation,
    as llama.cpp's and ollama's prompt caches do."""

    ids: list[int] = field(default_factory=list)
    state: list | None = None

    def feed(self, model: "LanguageModel", ids: list[int]) -> Tensor:
        """Logits (1, 1, V) after the last of `ids`, feeding only those after the cached ones
        when these start `ids`; else all of `ids` anew (a reply re-encoded from its text may
        tokenize differently)."""
        n = len(self.ids)
        keep = n if 0 < n < len(ids) and ids[:n] == self.ids else 0
        device = model.backbone.embed.weight.device
        new = torch.tensor([ids[keep:]], dtype=torch.long, device=device)  # (1, t)
        logits, self.state = model.step(
            new, self.state if keep else None, keep, None, last_only=True
        )
        self.ids = list(ids)
        return logits


@torch.inference_mode()
def generate_ids(
    model: "LanguageModel",
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    use_cache: bool = True,
    on_tokens: Callable[[Tensor], bool] | None = None,
    eos_ids: Sequence[int] = (),
    cache: Cache | None = None,
) -> Tensor:
    """New token ids (B, n <= max_new_tokens) for a batch of prompts, the model in eval mode.

    `on_tokens(tokens (B,))` sees each step's tokens as they come; returning True stops early.
    Generation also stops once every row has produced one of `eos_ids` (a pretrained model's
    end-of-sequence ids). `cache` (one prompt) carries the state from the previous call of a
    conversation and keeps it for the next one.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    device = model.backbone.embed.weight.device
    pad_id = model.backbone.embed.padding_idx or 0
    ids, n_pad = left_pad(prompts, pad_id)
    pad = torch.tensor([pad_id] if pad_id not in eos_ids else [], dtype=torch.long, device=device)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    ids, n_pad = ids.to(device), None if n_pad is None else n_pad.to(device)
    check_length(model, ids.shape[1], max_new_tokens)
    generator = torch.Generator(device=device).manual_seed(seed)
    if cache is not None:
        if len(prompts) != 1:
            raise ValueError("generate_ids: a cache holds one conversation; give one prompt")
        logits, state = cache.feed(model, prompts[0]), cache.state  # (1, t, V)
    else:
        logits, state = model.step(ids, None, 0, n_pad, last_only=True)  # (B, 1, V)
    new: list[Tensor] = []
    ended = torch.zeros(len(prompts), dtype=torch.bool, device=device)  # (B,) rows past EOS
    for offset in range(ids.shape[1], ids.shape[1] + max_new_tokens):
        logits = logits[:, -1].index_fill(-1, pad, -torch.inf)  # (B, V)
        token = next_token(logits, temperature, top_k, top_p, generator)  # (B,), never pad
        new.append(token)
        ended |= torch.isin(token, eos)
        stop = on_tokens is not None and on_tokens(token)
        if stop or bool(ended.all()) or len(new) == max_new_tokens:
            break
        if use_cache:  # the new token sits at column `offset`
            logits, state = model.step(token[:, None], state, offset, n_pad)  # (B, 1, V)
        else:
            ids = torch.cat([ids, token[:, None]], 1)  # (B, offset + 1)
            logits, _ = model.step(ids, None, 0, n_pad, last_only=True)  # the whole sequence again
    if cache is not None and use_cache:  # the last token was never fed back
        cache.ids, cache.state = prompts[0] + [int(t) for t in new[:-1]], state
    return torch.stack(new, 1)  # (B, n)


@dataclass
class Completion:
    """What one prompt continues with: the text, cut before `stop`, and how many tokens the
    model generated for it (EOS not counted, the tokens of the stop string counted: the model
    produced them). Re-encoding the text does not give that count: a byte-level tokenizer
    decodes an invalid byte to U+FFFD, three bytes again, and BPE merges differently."""

    text: str
    n_tokens: int


def generate_completions(
    model: "LanguageModel",
    tokenizer: Tokenizer,
    prompts: Sequence[str | list[int]],
    max_new_tokens: int,
    stop: str | None = None,
    on_text: Callable[[int, str], None] | None = None,
    add_bos: bool = True,
    **sampling: object,
) -> list[Completion]:
    """One `Completion` per prompt; generation ends once every row has produced `stop` or one
    of the tokenizer's EOS ids. `on_text(row, new_text)` streams the text as it is decoded.
    A prompt is text to continue (after the tokenizer's BOS unless `add_bos=False`) or ids
    read as they are (a conversation rendered by `encode_prompt`, special tokens and all)."""
    new: list[list[int]] = [[] for _ in prompts]
    texts, done = [""] * len(prompts), [False] * len(prompts)
    shown = [0] * len(prompts)  # characters of each text already streamed

    def on_tokens(tokens: Tensor) -> bool:
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token in tokenizer.eos_ids:
                done[row] = True
                continue
            new[row].append(token)
            text = tokenizer.decode(new[row])
            if stop and stop in text:
                text, done[row] = text[: text.index(stop)], True
            texts[row] = text
            if on_text is not None:
                end = len(text) if done[row] else len(text) - _held_back(text, stop)
                if end > shown[row]:
                    on_text(row, text[shown[row] : end])
                    shown[row] = end
        return all(done)

    bos = tokenizer.bos_ids if add_bos else []
    encoded = [p if isinstance(p, list) else bos + tokenizer.encode(p) for p in prompts]
    eos = tokenizer.eos_ids
    generate_ids(model, encoded, max_new_tokens, on_tokens=on_tokens, eos_ids=eos, **sampling)
    if on_text is not None:  # what was held back for a stop string that never came
        for row, text in enumerate(texts):
            if len(text) > shown[row]:
                on_text(row, text[shown[row] :])
    return [Completion(text, len(ids)) for text, ids in zip(texts, new, strict=True)]


def generate_text(
    model: "LanguageModel",
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    **options: object,
) -> list[str]:
    """The text each prompt continues with (`generate_completions` without the counts)."""
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens, **options)
    return [completion.text for completion in completions]


def _held_back(text: str, stop: str | None) -> int:
    """Length of the longest end of `text` that may be the start of `stop`: not streamed yet."""
    if not stop:
        return 0
    return next(
        (n for n in range(min(len(stop) - 1, len(text)), 0, -1) if stop.startswith(text[-n:])), 0
    )
