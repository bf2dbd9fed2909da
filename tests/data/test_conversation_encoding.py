"""A conversation as ids and targets: only the assistant's replies and their end-of-turn marker
are scored, the prompt is exactly the ids before the last reply, a chat template gives
`apply_chat_template`'s ids (SmolLM2), and roles a template cannot render are one line."""

import json
from pathlib import Path

import pytest

from lm_lab.data.loaders.instructions import cut
from lm_lab.data.tokenization.conversation import (
    IGNORE,
    PlainTemplate,
    conversation_text,
    encode_conversation,
    encode_prompt,
)
from lm_lab.data.tokenization.tokenizers import CharTokenizer, PretrainedTokenizer
from lm_lab.utils.errors import ConfigError

TINY = PlainTemplate(system="S:{content}|", user="U:{content}|", assistant="A:", end="#")
PAIR = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cd"}]
MULTI = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": "ab"},
    {"role": "assistant", "content": "cd"},
    {"role": "user", "content": "e"},
    {"role": "assistant", "content": "fg"},
]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!:|#\n"
SMOLLM2 = (  # SmolLM2-135M-Instruct's chat template, as its tokenizer_config.json holds it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chars() -> CharTokenizer:
    return CharTokenizer().fit([CHARS])


def scored(targets: list[int]) -> list[int]:
    return [i for i, t in enumerate(targets) if t != IGNORE]


def test_a_pair_scores_the_reply_and_its_end_only():
    tok = chars()
    ids, targets = encode_conversation(tok, PAIR, TINY)
    assert tok.decode(ids) == "U:ab|A:cd#"
    assert scored(targets) == [7, 8, 9]  # c, d and the end marker; never the prompt
    assert [targets[i] for i in scored(targets)] == ids[7:10]


def test_multi_turn_scores_every_assistant_turn_and_nothing_else():
    tok = chars()
    ids, targets = encode_conversation(tok, MULTI, TINY)
    assert tok.decode(ids) == "S:s|U:ab|A:cd#U:e|A:fg#"
    assert scored(targets) == [11, 12, 13, 20, 21, 22]  # "cd#" and "fg#"


def test_the_prompt_is_the_prefix_before_the_last_reply():
    tok = chars()
    ids, _ = encode_conversation(tok, MULTI, TINY)
    prompt = encode_prompt(tok, MULTI[:-1], TINY)
    assert tok.decode(prompt) == "S:s|U:ab|A:cd#U:e|A:" and ids[: len(prompt)] == prompt


def test_the_text_a_tokenizer_is_fitted_on_is_the_rendering():
    assert conversation_text(chars(), MULTI, TINY) == "S:s|U:ab|A:cd#U:e|A:fg#"


def test_the_plain_template_refuses_any_other_role_in_one_line():
    tool = [*PAIR[:1], {"role": "tool", "content": "x"}, PAIR[1]]
    with pytest.raises(ConfigError, match="role 'tool': the plain template knows system, user"):
        encode_conversation(chars(), tool, TINY)


def test_a_template_string_without_content_is_refused():
    with pytest.raises(ConfigError, match=r"task.template.user='U:': must hold \{content\} once"):
        PlainTemplate(user="U:")


def pretrained(folder: Path, template: str | None) -> PretrainedTokenizer:
    """A character-level pretrained tokenizer (specials + one token per character), EOS
    `<|im_end|>`, with `template` as its chat template (or none)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    folder.mkdir()
    vocab = {t: i for i, t in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.decoder = decoders.Fuse()
    tok.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(
        json.dumps(config | ({"chat_template": template} if template else {}))
    )
    return PretrainedTokenizer(folder)


def test_the_plain_template_ends_a_reply_with_the_eos_id_when_there_is_one(tmp_path):
    tok = pretrained(tmp_path / "tok", None)
    ids, targets = encode_conversation(tok, PAIR, TINY)
    assert ids[-1] == tok.eos_id == 1 and tok.decode(ids) == "U:ab|A:cd"  # EOS, not "#"
    assert scored(targets) == [7, 8, 9] and TINY.stop(tok) is None


def test_a_chat_template_scores_the_reply_and_im_end_not_the_newline_after(tmp_path):
    tok = pretrained(tmp_path / "tok", SMOLLM2)
    ids, targets = encode_conversation(tok, PAIR, None)
    reply = [tok.decode([ids[i]]) or SPECIALS[ids[i]] for i in scored(targets)]
    assert reply == ["c", "d", "<|im_end|>"] and ids[-1] == tok.encode("\n")[0]
    assert targets[-1] == IGNORE


@pytest.fixture(scope="module")
def smollm2() -> tuple[PretrainedTokenizer, object]:
    transformers = pytest.importorskip("transformers")
    from lm_lab.hf.folder import resolve

    folder = resolve("smollm2")
    return PretrainedTokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)


ALPACA = {
    "instruction": "Summarize the text.",
    "input": "Lists are mutable.",
    "output": "Lists change.",
}
MESSAGES = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "What does json.dumps do?"},
    {"role": "assistant", "content": "Serialize obj to a JSON formatted str."},
    {"role": "user", "content": "And json.loads?"},
    {"role": "assistant", "content": " Deserialize s to a Python object.\n"},
]


@pytest.mark.parametrize("record", [{"messages": MESSAGES}, ALPACA], ids=["messages", "alpaca"])
def test_smollm2_ids_equal_apply_chat_template(smollm2, record):
    from lm_lab.data.sources.conversations import to_conversation

    tok, hf = smollm2
    messages = to_conversation(record).messages
    ids, targets = encode_conversation(tok, messages, PlainTemplate())
    theirs = hf.apply_chat_template(messages, tokenize=True)
    assert ids == list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)
    prompt = encode_prompt(tok, messages[:-1], PlainTemplate())
    theirs = hf.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)
    assert prompt == list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)
    assert ids[: len(prompt)] == prompt
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert tok.decode([t for t in targets if t != IGNORE]) == "".join(replies)  # + <|im_end|>s
    assert sum(t == tok.eos_id for t in targets) == len(replies)


def test_a_role_the_chat_template_drops_is_one_line(tmp_path):
    drops = (
        "{% for m in messages %}{% if m['role'] != 'tool' %}"
        "{{ m['role'] + ':' + m['content'] + '<|im_end|>' }}{% endif %}{% endfor %}"
    )
    tok = pretrained(tmp_path / "tok", drops)
    tool = [*PAIR[:1], {"role": "tool", "content": "x"}, PAIR[1]]
    with pytest.raises(ConfigError, match="role 'tool': the model's chat template drops it"):
        encode_conversation(tok, tool, None)


def test_a_role_the_chat_template_raises_on_is_one_line(tmp_path):
    strict = (
        "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
        "{{ m['role'] + ':' + m['content'] + '<|im_end|>' }}{% endfor %}"
    )
    tok = pretrained(tmp_path / "tok", strict)
    with pytest.raises(ConfigError, match="chat template: TemplateError: unknown role tool"):
        encode_conversation(tok, [*PAIR[:1], {"role": "tool", "content": "x"}, PAIR[1]], None)


def test_cut_keeps_the_reply_and_the_prompts_end_aligned():
    tok = chars()
    long = [{"role": "user", "content": "abcdefghij"}, {"role": "assistant", "content": "xy"}]
    ids, targets = encode_conversation(tok, long, TINY)  # "U:abcdefghij|A:xy#"
    kept_ids, kept_targets = cut(ids, targets, 8)
    assert tok.decode(kept_ids) == "ij|A:xy#"  # the whole reply, the prompt's last characters
    assert [t for t in kept_targets if t != IGNORE] == tok.encode("xy#")
    assert all(t in (IGNORE, i) for t, i in zip(kept_targets, kept_ids, strict=True))


def test_cut_of_a_reply_longer_than_the_window_keeps_half_a_window_of_prompt():
    tok = chars()
    long = [{"role": "user", "content": "abcdef"}, {"role": "assistant", "content": "uvwxyz"}]
    ids, targets = encode_conversation(tok, long, TINY)  # "U:abcdef|A:uvwxyz#"
    kept_ids, kept_targets = cut(ids, targets, 8)
    assert tok.decode(kept_ids) == "f|A:uvwx"
    assert scored(kept_targets) == [4, 5, 6, 7]


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path):
    last_marked = (
        "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    )
    tok = pretrained(tmp_path / "tok", last_marked)
    with pytest.raises(ConfigError, match="adding the .* changes how the turns before it render"):
        encode_conversation(tok, PAIR, None)
