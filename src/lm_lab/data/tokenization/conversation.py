"""A conversation as training ids and targets (`encode_conversation`), and a prompt as the ids a
reply is generated after (`encode_prompt`): the one way `task=sft`, `generate.py chat=true`
and `eval.py mode=sft` render a conversation.

The model's chat template wins when its tokenizer has one (SmolLM2: `<|im_start|>user\\n...
<|im_end|>`); else the plain template (`conf/sft_template/`, a `PlainTemplate`). Targets are
-100 everywhere but on each assistant turn's reply and its end-of-turn marker (the chat
template's `<|im_end|>`, i.e. the last of the tokenizer's `eos_ids` the rendered turn holds; the
plain template's EOS, or its `end` text for a tokenizer without EOS), so the model learns to
answer and to stop, never to write the user's turns.

A chat template is rendered one turn at a time and each turn's text is the difference between
the rendering with and without it, so the reply's characters are known exactly; the text is
then tokenized in runs that break only where a reply starts and ends. The prompt is the same
runs up to where the last reply starts, so `encode_prompt(messages[:-1])` is exactly the prefix
of `encode_conversation(messages)`; on SmolLM2 the ids equal `apply_chat_template`'s.
"""

from dataclasses import dataclass

from lm_lab.data.tokenization.chat import Message, render
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.utils.errors import ConfigError

IGNORE = -100  # the target of a position the loss skips
PLAIN_ROLES = ("system", "user", "assistant")
Piece = tuple[str | list[int], bool]  # (text, or ids already encoded; scored?)


@dataclass(frozen=True)
class PlainTemplate:
    """How a model without a chat template reads a conversation: `system` and `user` are format
    strings with `{content}`; `assistant` is the text before a reply; after the reply comes the
    tokenizer's EOS, or the `end` text when it has none (char, byte, bpe tokenizers), both
    scored, so a tuned model learns to stop (generation stops at the EOS or at `end`)."""

    system: str = "{content}\n\n"
    user: str = "### User:\n{content}\n\n"
    assistant: str = "### Assistant:\n"
    end: str = "\n<|end|>\n"

    def __post_init__(self) -> None:
        for key in ("system", "user"):
            if getattr(self, key).count("{content}") != 1:
                raise ConfigError(
                    f"task.template.{key}={getattr(self, key)!r}: must hold {{content}} once"
                )

    def stop(self, tokenizer: Tokenizer) -> str | None:
        """The text that ends a reply in generation: None when the EOS id ends it."""
        return None if tokenizer.eos_id is not None else self.end


def _plain_pieces(
    tokenizer: Tokenizer, messages: list[Message], template: PlainTemplate, prompt: bool
) -> list[Piece]:
    pieces: list[Piece] = [(list(tokenizer.bos_ids), False)]
    for message in messages:
        role, content = message["role"], message["content"]
        if role not in PLAIN_ROLES:
            raise ConfigError(
                f"role {role!r}: the plain template knows {', '.join(PLAIN_ROLES)}; map it to "
                "one of them in the data, or use a model whose chat template has that role"
            )
        eos = tokenizer.eos_id
        if role == "assistant":
            pieces.append((template.assistant, False))
            pieces.append((content if eos is not None else content + template.end, True))
            if eos is not None:
                pieces.append(([eos], True))
        else:  # replace, not format: the content may hold braces
            pieces.append((getattr(template, role).replace("{content}", content), False))
    if prompt:
        pieces.append((template.assistant, False))
    return pieces


def _render(tokenizer: Tokenizer, messages: list[Message], generation: bool) -> str:
    assert tokenizer.chat_template is not None
    return render(tokenizer.chat_template, messages, tokenizer.special_tokens, generation)


def _after(longer: str, shorter: str, role: str | None) -> str:
    """What adding a turn (`role`; None: the generation prompt) added to the rendering. A
    template that rewrites earlier turns, or renders nothing for a turn (drops its role), cannot
    have its replies marked, so it is refused; a generation prompt may add nothing."""
    if not longer.startswith(shorter):
        added = "the generation prompt" if role is None else f"the {role!r} turn"
        raise ConfigError(
            f"chat template: adding {added} changes how the turns before it render; its "
            "replies cannot be marked for the loss (use a model whose template renders each "
            "turn once, or the plain template)"
        )
    if longer == shorter and role is not None:
        raise ConfigError(
            f"role {role!r}: the model's chat template drops it; map it to system, user or "
            "assistant in the data"
        )
    return longer[len(shorter) :]


def _chat_pieces(tokenizer: Tokenizer, messages: list[Message], prompt: bool) -> list[Piece]:
    pieces: list[Piece] = []
    text = ""  # the rendering so far
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            opened = _render(tokenizer, messages[:i], generation=True) if i else ""
            pieces.append((_after(opened, text, None), False))
            text = opened
        rendered = _render(tokenizer, messages[: i + 1], generation=False)
        pieces.append((_after(rendered, text, message["role"]), message["role"] == "assistant"))
        text = rendered
    if prompt:
        pieces.append((_after(_render(tokenizer, messages, True), text, None), False))
    return pieces


def _reply_targets(tokenizer: Tokenizer, ids: list[int]) -> list[int]:
    """A rendered turn's targets: every id up to its end-of-turn marker (the last EOS id in it;
    the whole turn when it holds none); what the template writes after the marker is not the
    model's to predict (SmolLM2's newline after `<|im_end|>`)."""
    ends = [i for i, token in enumerate(ids) if token in tokenizer.eos_ids]
    stop = ends[-1] + 1 if ends else len(ids)
    return ids[:stop] + [IGNORE] * (len(ids) - stop)


def _runs(pieces: list[Piece]) -> list[Piece]:
    """Consecutive unscored texts joined, so that they tokenize as one run, as the whole
    rendering would; a run breaks only where a reply starts or ends."""
    runs: list[Piece] = []
    for piece, scored in pieces:
        joins = isinstance(piece, str) and not scored and runs and not runs[-1][1]
        if joins and isinstance(runs[-1][0], str):
            runs[-1] = (runs[-1][0] + piece, False)
        else:
            runs.append((piece, scored))
    return runs


def _encode(tokenizer: Tokenizer, pieces: list[Piece], chat: bool) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    targets: list[int] = []
    for piece, scored in _runs(pieces):
        encoded = tokenizer.encode(piece) if isinstance(piece, str) else piece
        ids += encoded
        if not scored:
            targets += [IGNORE] * len(encoded)
        else:
            targets += _reply_targets(tokenizer, encoded) if chat else encoded
    return ids, targets


def _pieces(
    tokenizer: Tokenizer, messages: list[Message], template: PlainTemplate | None, prompt: bool
) -> tuple[list[Piece], bool]:
    if tokenizer.chat_template is not None:
        return _chat_pieces(tokenizer, messages, prompt), True
    if template is None:
        raise ConfigError(
            "the tokenizer has no chat template and no plain template was given; set "
            "sft_template@task.template=plain (conf/sft_template/)"
        )
    return _plain_pieces(tokenizer, messages, template, prompt), False


def encode_conversation(
    tokenizer: Tokenizer, messages: list[Message], template: PlainTemplate | None
) -> tuple[list[int], list[int]]:
    """(ids, targets), the same length: targets are the ids on every assistant reply and its
    end-of-turn marker, -100 elsewhere. Not shifted: targets[t] is ids[t] or -100; the loader
    pairs input_ids = ids[:-1] with targets[1:], so each scored token is predicted from the
    ones before it."""
    pieces, chat = _pieces(tokenizer, messages, template, prompt=False)
    return _encode(tokenizer, pieces, chat)


def encode_prompt(
    tokenizer: Tokenizer, messages: list[Message], template: PlainTemplate | None
) -> list[int]:
    """The ids a reply is generated after: `messages` (everything before the reply) and the
    opening of an assistant turn. Equal to the ids of `encode_conversation(messages + [reply])`
    up to where the reply starts."""
    pieces, chat = _pieces(tokenizer, messages, template, prompt=True)
    return _encode(tokenizer, pieces, chat)[0]


def conversation_text(
    tokenizer: Tokenizer, messages: list[Message], template: PlainTemplate | None
) -> str:
    """The conversation's text as the model reads it, without the ids a template adds (EOS,
    BOS): what a tokenizer trained here (char, byte, bpe) is fitted on."""
    pieces, _ = _pieces(tokenizer, messages, template, prompt=False)
    return "".join(piece for piece, _ in pieces if isinstance(piece, str))
