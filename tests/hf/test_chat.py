"""Chat: templates render as transformers' `apply_chat_template` does, every declared EOS id
stops generation, `interactive=true` reuses the KV cache across turns, export keeps the
template, and SmolLM2 (the real model, `smollm2`) answers a question and stops at <|im_end|>."""

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_lab.build import load_module
from lm_lab.data.tokenization.chat import render
from lm_lab.data.tokenization.tokenizers import PretrainedTokenizer
from lm_lab.export import main as export_main
from lm_lab.generate import run as generate
from lm_lab.hf.folder import resolve
from lm_lab.tasks.sampling import Cache, generate_completions
from lm_lab.utils.errors import ConfigError

transformers = pytest.importorskip("transformers")  # the dev extra: the reference renderer

ROOT = Path(__file__).resolve().parents[2]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<s>", "</s>"]
CHARS = string.ascii_letters + string.digits + " .,?!'\n"
CHATML = (  # SmolLM2's: a default system message unless the conversation opens with one
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2 = (  # bos/eos names, raise_exception on a bad order, strip, loop controls
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set sys = false %}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
    "{% if loop.index0 == 0 and sys %}{% set content = '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n'"
    " + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
ZEPHYR = (  # namespace, tojson, a {% generation %} block, lstrip/trim of block lines
    "{% set ns = namespace(n=0) %}\n{% for message in messages %}\n"
    "    {% set ns.n = ns.n + 1 %}\n"
    "<|{{ message['role'] }}|>{{ ns.n }} {{ message['content'] | tojson }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ eos_token }}{% endgeneration %}"
    "{% endif %}\n{% endfor %}\n{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of Italy?"},
    ],
    [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": " Hi! How can I help? "},
        {"role": "user", "content": 'Say "été" & <b>bold</b>'},
    ],
]


def char_tokenizer(folder: Path) -> int:
    """tokenizer.json: the special tokens, then one token per character, no merges, so that a
    reply decodes and re-encodes to the same ids (the cache is then reused, never rebuilt).
    Returns the vocabulary size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    vocab = {t: i for i, t in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.decoder = decoders.Fuse()
    tok.save(str(folder / "tokenizer.json"))
    return len(vocab)


def tokenizer_folder(folder: Path, template: str | None, in_file: bool = False) -> Path:
    """A tokenizer folder with `template` in tokenizer_config.json or chat_template.jinja."""
    folder.mkdir(parents=True)
    char_tokenizer(folder)
    config = {"bos_token": "<s>", "eos_token": "<|im_end|>", "model_max_length": 77}
    if template is not None and in_file:
        (folder / "chat_template.jinja").write_text(template)
    elif template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    """A tiny random Llama with the character tokenizer and the ChatML template."""
    folder = tokenizer_folder(tmp_path_factory.mktemp("chat") / "model", CHATML)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(SPECIALS) + len(CHARS), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, bos_token_id=2, eos_token_id=1, initializer_range=0.2,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def theirs(folder: Path, conversation: list[dict], add_generation_prompt: bool) -> str:
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return tok.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def ours(folder: Path, conversation: list[dict], add_generation_prompt: bool) -> str:
    tok = PretrainedTokenizer(folder)
    return render(tok.chat_template, conversation, tok.special_tokens, add_generation_prompt)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["user", "system", "multi_turn"])
@pytest.mark.parametrize("template", ["chatml", "llama2", "zephyr", "zephyr_file"])
def test_rendering_equals_apply_chat_template(
    tmp_path, template, conversation, add_generation_prompt
):
    text = {"chatml": CHATML, "llama2": LLAMA2}.get(template, ZEPHYR)
    folder = tokenizer_folder(tmp_path / "tok", text, in_file=template == "zephyr_file")
    expected = theirs(folder, conversation, add_generation_prompt)
    assert ours(folder, conversation, add_generation_prompt) == expected
    assert "[INST]" in expected if template == "llama2" else "<|" in expected


def test_a_list_of_named_templates_uses_the_default_one(tmp_path):
    folder = tokenizer_folder(tmp_path / "tok", None)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    named = [{"name": "tool_use", "template": LLAMA2}, {"name": "default", "template": CHATML}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": named}))
    assert PretrainedTokenizer(folder).chat_template == CHATML
    assert ours(folder, CONVERSATIONS[2], True) == theirs(folder, CONVERSATIONS[2], True)


def test_a_templates_raise_exception_is_one_line(tmp_path):
    folder = tokenizer_folder(tmp_path / "tok", LLAMA2)
    bad = [{"role": "assistant", "content": "first"}]
    with pytest.raises(Exception, match="roles must alternate"):
        theirs(folder, bad, True)
    with pytest.raises(Exception, match="chat template: TemplateError: roles must alternate"):
        ours(folder, bad, True)


def test_the_sandbox_refuses_what_a_template_must_not_reach(tmp_path):
    folder = tokenizer_folder(tmp_path / "tok", "{{ messages.__class__.__mro__ }}")
    with pytest.raises(Exception, match="chat template: SecurityError"):
        ours(folder, CONVERSATIONS[0], True)


def test_smollm2_rendering_and_ids_equal_apply_chat_template():
    folder = resolve("smollm2")
    tok, hf = PretrainedTokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    for conversation in CONVERSATIONS:
        for add in (True, False):
            text = ours(folder, conversation, add)
            assert text == theirs(folder, conversation, add)
            ids = hf.apply_chat_template(conversation, tokenize=True, add_generation_prompt=add)
            assert tok.encode(text) == list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def greedy_ids(folder: Path, n: int) -> list[int]:
    """transformers' greedy continuation of `hi` (no EOS: it stops only at `n`)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([PretrainedTokenizer(folder).encode("hi")])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("where", ["config.json", "generation_config.json"])
def test_every_declared_eos_id_stops_generation(chat_model, tmp_path, where):
    """config.json's `eos_token_id` list and generation_config.json's both end a sample; only
    the first was kept, so a Llama 3 `<|eot_id|>` never stopped it."""
    folder = copy_of(chat_model, tmp_path / "model")
    greedy = greedy_ids(folder, 12)
    k = next(i for i in range(3, 12) if greedy[i] not in greedy[:i])  # a fresh id at k
    assert 1 not in greedy[: k + 1]  # <|im_end|> itself comes later
    for name in ("config.json", "generation_config.json"):
        config = json.loads((folder / name).read_text())
        config["eos_token_id"] = [1, greedy[k]] if name == where else 1
        (folder / name).write_text(json.dumps(config))
    tok = PretrainedTokenizer(folder)
    assert tok.eos_ids == [1, greedy[k]]
    module, _ = load_module(str(folder))
    (done,) = generate_completions(module, tok, ["hi"], 12, temperature=0)
    assert done.n_tokens == k and done.text == tok.decode(greedy[:k])


def chat_cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python generate.py args...` as a user types it, in `cwd`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ROOT", "HYDRA_FULL_ERROR")}
    return subprocess.run(
        [sys.executable, str(ROOT / "generate.py"), *args, f"paths.log_dir={cwd / 'logs'}"],
        cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def samples(cwd: Path) -> list[dict]:
    (path,) = (cwd / "logs").rglob("samples.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interactive_turn_two_equals_a_fresh_run_on_the_whole_conversation(chat_model, tmp_path):
    lines = ["hello there", "what is 2 and 2?", "bye now"]
    done = chat_cli(
        f"ckpt_path={chat_model}", "interactive=true", "max_new_tokens=8", "device=cpu",
        cwd=tmp_path, stdin="\n".join([lines[0], "", *lines[1:]]) + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    turns = samples(tmp_path)
    assert [t["prompt"] for t in turns] == lines  # the blank line is no turn
    module, _ = load_module(str(chat_model))
    tok, messages = module.tokenizer, []
    for turn in turns:  # each reply equals a greedy run on the whole conversation, no cache
        messages.append({"role": "user", "content": turn["prompt"]})
        text = render(tok.chat_template, messages, tok.special_tokens)
        (fresh,) = generate_completions(
            module, tok, [text], 8, temperature=0, add_bos=False, use_cache=False
        )
        assert turn["completion"] == fresh.text
        messages.append({"role": "assistant", "content": fresh.text})
        assert turn["completion"] in done.stdout


def test_the_cache_feeds_turn_two_only_its_new_ids_with_the_same_logits(chat_model):
    module, _ = load_module(str(chat_model))
    tok, cache = module.tokenizer, Cache()
    messages = [{"role": "user", "content": "hello there"}]
    first = render(tok.chat_template, messages, tok.special_tokens)
    (reply,) = generate_completions(
        module, tok, [first], 8, temperature=0, add_bos=False, cache=cache
    )
    held = list(cache.ids)  # the prompt and every reply token fed back: all but the last
    assert held == tok.encode(first) + tok.encode(reply.text)[:7]
    messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "ok"}]
    ids = tok.encode(render(tok.chat_template, messages, tok.special_tokens))
    assert ids[: len(held)] == held  # so the cache is reused, not rebuilt
    fed: list[int] = []
    step = module.step
    module.step = lambda x, *a, **kw: fed.append(x.shape[1]) or step(x, *a, **kw)
    with torch.no_grad():
        cached = cache.feed(module, ids)[:, -1]  # (1, V)
    assert fed == [len(ids) - len(held)]
    with torch.no_grad():
        whole = step(torch.tensor([ids]), None, 0, None)[0][:, -1]
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)


def copy_of(folder: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, to))


NO_TEMPLATE = (
    "{mode}: ckpt_path={folder} has no chat template (chat_template in tokenizer_config.json, "
    "or chat_template.jinja); drop it to continue the prompt as plain text"
)


def untemplated(chat_model: Path, tmp_path: Path) -> Path:
    folder = copy_of(chat_model, tmp_path / "model")
    (folder / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    return folder


def test_chat_on_a_model_without_a_template_is_one_line_exit_2(chat_model, tmp_path):
    folder = untemplated(chat_model, tmp_path)
    done = chat_cli(f"ckpt_path={folder}", "chat=true", "prompt=hi", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip().count("\n")) == (2, 0), done.stderr
    assert done.stderr.strip() == "error: " + NO_TEMPLATE.format(mode="chat=true", folder=folder)


def test_interactive_on_a_model_without_a_template_is_refused(chat_model, compose, tmp_path):
    folder = untemplated(chat_model, tmp_path)
    cfg = compose(f"ckpt_path={folder}", "interactive=true", config_name="generate")
    with pytest.raises(ConfigError) as err:
        generate(cfg)
    assert str(err.value) == NO_TEMPLATE.format(mode="interactive=true", folder=folder)


def test_export_keeps_the_chat_template_eos_ids_and_tokenizer_settings(chat_model, tmp_path):
    folder = copy_of(chat_model, tmp_path / "model")
    generation = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(
        json.dumps(generation | {"eos_token_id": [1, 9]})
    )
    assert export_main([str(folder), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHATML and config["model_max_length"] == 77
    assert json.loads((tmp_path / "out" / "config.json").read_text())["eos_token_id"] == [1, 9]
    again = PretrainedTokenizer(tmp_path / "out")
    assert (again.chat_template, again.eos_ids) == (CHATML, [1, 9])
    for conversation in CONVERSATIONS:  # transformers reads the exported template too
        expected = theirs(folder, conversation, True)
        assert ours(tmp_path / "out", conversation, True) == expected
        assert theirs(tmp_path / "out", conversation, True) == expected


def test_a_tokenizer_saved_before_chat_support_keeps_its_single_eos(chat_model):
    """Checkpoints written before eos_ids and chat_template existed still load and generate."""
    state = json.loads(PretrainedTokenizer(chat_model).to_json())
    for key in ("eos_ids", "chat_template", "special_tokens", "settings"):
        del state[key]
    old = PretrainedTokenizer(state=state)
    assert (old.eos_ids, old.chat_template, old.special_tokens) == ([1], None, {})


def test_smollm2_answers_paris_and_stops_at_im_end(tmp_path):
    """The issue's command, as typed: greedy (temperature=null in a chat), the reply alone."""
    done = chat_cli(
        "ckpt_path=smollm2", "chat=true", "prompt=What is the capital of France?", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    (sample,) = samples(tmp_path)
    assert sample["completion"] == "The capital of France is Paris."
    assert sample["new_tokens"] == 7  # stopped at <|im_end|>, far before max_new_tokens=200
    printed = [line for line in done.stdout.splitlines() if not line.startswith("[")]  # no logs
    assert printed[0] == "The capital of France is Paris."  # the reply alone, no prompt echoed
