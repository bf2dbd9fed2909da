"""Conversations: the unit an instruction-tuning (`task=sft`) source returns, and the formats
users already have, detected per record by its fields (`to_conversation`):

- `{"messages": [{"role": ..., "content": ...}, ...]}` (chat; loss on every assistant turn),
- `{"prompt": ..., "response": ...}` and `{"prompt": ..., "completion": ...}` (TRL's
  prompt/completion; either side may also be a list of messages, TRL's conversational form),
- Alpaca's `{"instruction": ..., "input": ... (optional), "output": ...}`.

Any of them may carry `"kind"` (a sub-task name the evaluation scores by) and
`"system"` (a system message put first). A record that cannot be read raises `BadRecord`: the
sources (`records.read_conversations`) count it by reason, as the text sources count dropped
records, unless it is `fatal` (a conversation with no assistant turn: nothing to learn, and a
sign of a wrong file), which stops the run at the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lm_lab.data.sources.split import check_disjoint

if TYPE_CHECKING:  # a type alias only: sources and tokenization import nothing of each other
    from lm_lab.data.tokenization.chat import Message

FORMATS = "messages, prompt/response, prompt/completion or instruction/input/output (Alpaca)"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Conversation:
    """One training example of `task=sft`: the turns in order, the assistant's ones scored.
    `kind` names a sub-task (pydoc_sft's "qa", "summarize", ...); `where` ("file.jsonl:12")
    lets errors found later (an unknown role, a conversation too long) point at the record."""

    messages: list[Message]
    kind: str | None = None
    where: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        """Hashable identity of the turns, for the check that no two splits share one."""
        return tuple((m["role"], m["content"]) for m in self.messages)


class BadRecord(ValueError):
    """A record that is not a conversation; `reason` is a short snake_case name the data
    stats count (`dropped_<reason>`), `fatal` stops the run instead (see the module doc)."""

    def __init__(self, reason: str, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.reason, self.what, self.fix = reason, what, fix

    @property
    def fatal(self) -> bool:
        """A record that says the file is wrong, not just one bad line: it stops the run, and
        `fix` says what to change."""
        return self.fix is not None


def _text(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise BadRecord(f"{key}_not_string", f"{key} is {type(value).__name__} {value!r:.40}")
    return value


def _message(value: Any) -> Message:
    if not isinstance(value, dict) or not {"role", "content"} <= value.keys():
        raise BadRecord("message_not_role_content", f"a message is {value!r:.60}")
    role, content = value["role"], value["content"]
    if not isinstance(role, str) or not role:
        raise BadRecord("role_not_string", f"a role is {type(role).__name__} {role!r:.40}")
    if not isinstance(content, str):
        raise BadRecord("content_not_string", f"a {role} content is {type(content).__name__}")
    return {"role": role, "content": content}


def _messages(value: Any, key: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise BadRecord(f"{key}_not_list", f"{key} is {type(value).__name__} {value!r:.40}")
    return [_message(item) for item in value]


def _turn(record: dict[str, Any], key: str, role: str) -> list[Message]:
    """One side of a prompt/response pair: a string (one `role` turn) or a list of messages."""
    if isinstance(record[key], list):
        return _messages(record[key], key)
    return [{"role": role, "content": _text(record, key)}]


def _alpaca(record: dict[str, Any]) -> list[Message]:
    """Alpaca's instruction, and its input below it when there is one, as the user turn."""
    instruction = _text(record, "instruction")
    extra = _text(record, "input") if record.get("input") is not None else ""
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": _text(record, "output")},
    ]


def _detect(record: dict[str, Any]) -> list[Message]:
    if "messages" in record:
        return _messages(record["messages"], "messages")
    for reply in ("response", "completion"):
        if {"prompt", reply} <= record.keys():
            return _turn(record, "prompt", "user") + _turn(record, reply, "assistant")
    if {"instruction", "output"} <= record.keys():
        return _alpaca(record)
    fields = ", ".join(map(str, record)) or "none"
    raise BadRecord("unknown_format", f"fields {fields}; expected {FORMATS}")


def to_conversation(record: dict[str, Any], where: str = "") -> Conversation:
    """The record as a Conversation, its format told by its fields; BadRecord when it is none.
    An optional `system` field becomes the first turn (unless the messages start with one)."""
    messages = _detect(record)
    if record.get("system") is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": _text(record, "system")}, *messages]
    if not any(m["role"] == "assistant" for m in messages):
        roles = ", ".join(m["role"] for m in messages)
        raise BadRecord(
            "no_assistant_turn",
            f"no assistant turn (roles: {roles})",
            fix="every conversation needs an assistant reply to learn; add one or drop the record",
        )
    kind = record.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise BadRecord("kind_not_string", f"kind is {type(kind).__name__} {kind!r:.40}")
    return Conversation(messages, kind, where)


def check_splits_disjoint(splits: dict[str, list[Conversation]], origin: str) -> None:
    """No conversation in two splits (the same turns, wherever they were read)."""
    check_disjoint(
        {name: [c.key for c in conversations] for name, conversations in splits.items()},
        lambda first, second, key: (
            f"{origin}: the conversation starting {key[0][1]!r:.60} is in both the {first} and "
            f"the {second} split; remove it from one"
        ),
    )
