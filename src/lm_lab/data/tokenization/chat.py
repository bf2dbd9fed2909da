"""Chat templates and end-of-sequence ids of a pretrained model's folder.

A chat template is Jinja code from a downloaded file, so it is rendered in jinja2's
`ImmutableSandboxedEnvironment` with the settings and helpers `transformers`'
`apply_chat_template` gives it (trim_blocks, lstrip_blocks, loop controls, `tojson` without
HTML escaping, `raise_exception`, `strftime_now`): the same text for the same conversation,
without `transformers` installed. A model may declare several end-of-sequence ids (Llama 3:
`<|end_of_text|>` and `<|eot_id|>`): config.json's `eos_token_id` may be a list and
generation_config.json may add ids; generation stops at any of them.
"""

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from lm_lab.utils.errors import ConfigError

TEMPLATE_FILE = "chat_template.jinja"  # transformers >= 4.50 saves the template here
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


def _json(path: Path) -> dict[str, Any]:
    """A folder's JSON file, or {} when it is absent (most files are optional)."""
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def read_template(folder: Path) -> str | None:
    """chat_template.jinja, else tokenizer_config.json's `chat_template` (a string, or a list of
    named templates: the "default" one), else None. The file wins, as in transformers."""
    if (folder / TEMPLATE_FILE).is_file():
        return (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    template = _json(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _ids(value: object) -> list[int]:
    """An `eos_token_id` value: an int, a list of ints, or null."""
    items = value if isinstance(value, list) else [value]
    return [i for i in items if isinstance(i, int) and not isinstance(i, bool)]


def read_eos_ids(folder: Path, first: int | None) -> list[int]:
    """Every end-of-sequence id the folder declares, `first` (the tokenizer's EOS) first, then
    config.json's and generation_config.json's `eos_token_id` (an int or a list), each once."""
    declared = [*_ids(first)]
    for name in ("config.json", "generation_config.json"):
        declared += _ids(_json(folder / name).get("eos_token_id"))
    return list(dict.fromkeys(declared))  # in order, without repeats


def tokenizer_settings(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json as read, without the template (kept on its own): what an export
    writes back so that the folder's tokenizer settings survive."""
    settings = _json(folder / "tokenizer_config.json")
    settings.pop("chat_template", None)
    return settings


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """The template compiled once per text in the sandbox, with transformers' helpers."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's tokens for training
        masks in transformers; rendering keeps the body as it is."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, **kw: Any) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, **kw)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render(
    template: str,
    messages: list[Message],
    special_tokens: dict[str, str],
    add_generation_prompt: bool = True,
) -> str:
    """The conversation as the model was trained to read it; with `add_generation_prompt` it
    ends where the assistant's reply begins. `special_tokens` (bos_token, eos_token, ...) are
    the names templates use, as transformers passes them."""
    import jinja2

    try:
        return _compiled(template).render(
            **special_tokens,
            messages=messages,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
        )
    except jinja2.TemplateError as err:
        raise ConfigError(f"chat template: {type(err).__name__}: {err}") from None
