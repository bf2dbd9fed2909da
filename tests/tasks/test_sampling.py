"""The sampler: cached equals recomputed, batches equal lone prompts, filters hold, limits fail."""

import pytest
import torch
from omegaconf import DictConfig

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer
from lm_lab.tasks.language_model import LanguageModel
from lm_lab.tasks.sampling import (
    check_sampling,
    filter_logits,
    generate_completions,
    generate_ids,
    generate_text,
    next_token,
)
from lm_lab.utils.errors import ConfigError

ENCODERS = ["transformer", "bilstm", "hybrid"]
TOKENIZER = CharTokenizer().fit(["abcdefghij klmnop\n"])


def language_model(cfg: DictConfig, tokenizer: Tokenizer = TOKENIZER) -> LanguageModel:
    """A random model whose encoder outweighs the residual embedding, so greedy decoding does
    not just repeat a token, and whose logits are far apart, so argmax never hangs on noise."""
    torch.manual_seed(0)
    module = build_module(cfg, tokenizer, None)
    with torch.no_grad():
        for p in module.backbone.encoder.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.9 / p.shape[1] ** 0.5)
    return module.eval()


@pytest.mark.parametrize("encoder", ENCODERS)
def test_cached_greedy_equals_recomputed_greedy(encoder, compose):
    model = language_model(compose(f"model={encoder}", "task=generate"))
    prompts = [TOKENIZER.encode("abc"), TOKENIZER.encode("fed")]
    cached = generate_ids(model, prompts, 24, temperature=0)
    recomputed = generate_ids(model, prompts, 24, temperature=0, use_cache=False)
    assert cached.shape == (2, 24) and torch.equal(cached, recomputed)
    assert len(set(cached.flatten().tolist())) > 2  # not a degenerate repeat


@pytest.mark.parametrize("encoder", ENCODERS)
def test_left_padded_batch_equals_each_prompt_alone(encoder, compose):
    model = language_model(compose(f"model={encoder}", "task=generate"))
    prompts = [TOKENIZER.encode("a"), TOKENIZER.encode("hello kid"), TOKENIZER.encode("po")]
    batch = generate_ids(model, prompts, 12, temperature=0)
    for row, prompt in enumerate(prompts):
        assert torch.equal(batch[row], generate_ids(model, [prompt], 12, temperature=0)[0])


def test_generation_projects_one_position_per_row_and_step(compose, monkeypatch):
    """The prompt's other positions are never projected onto the vocabulary (last_only), and
    those logits equal the last column of the whole projection."""
    model = language_model(compose("model=transformer", "task=generate"))
    ids = torch.tensor([TOKENIZER.encode("hello kid")])  # (1, 9)
    whole, _ = model.step(ids, None, 0)  # (1, 9, V)
    last, _ = model.step(ids, None, 0, last_only=True)  # (1, 1, V)
    assert last.shape == (1, 1, whole.shape[-1])
    torch.testing.assert_close(last, whole[:, -1:], rtol=0, atol=1e-6)  # one row vs nine: rounding
    projected, logits = [], model.backbone.logits
    monkeypatch.setattr(model.backbone, "logits", lambda h: projected.append(h.shape) or logits(h))
    generate_ids(model, [TOKENIZER.encode("hello kid"), TOKENIZER.encode("a")], 5, temperature=0)
    assert projected == [torch.Size([2, 1, model.backbone.embed.embedding_dim])] * 5


def draws(logits: torch.Tensor, **filters) -> set[int]:
    generator = torch.Generator().manual_seed(0)
    batch = logits.expand(2000, -1)
    return set(next_token(batch, 1.0, generator=generator, **filters).tolist())


def test_top_k_samples_only_the_k_most_likely():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9, -1.0, 2.8]])
    assert draws(logits, top_k=3, top_p=None) == {1, 3, 5}


def test_top_p_samples_only_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5, 0.3 | 0.15, 0.05
    assert draws(probs.log(), top_k=None, top_p=0.7) == {1, 3}
    assert draws(probs.log(), top_k=None, top_p=0.1) == {1}  # the top token always stays
    kept = filter_logits(probs.log(), top_k=None, top_p=0.85)
    assert torch.isinf(kept).tolist() == [[True, False, False, False]]


def test_same_seed_same_sample_and_temperature_zero_is_argmax(compose):
    model = language_model(compose("task=generate"))
    prompt = [TOKENIZER.encode("ab")]
    first = generate_ids(model, prompt, 16, temperature=1.0, seed=3)
    assert torch.equal(first, generate_ids(model, prompt, 16, temperature=1.0, seed=3))
    assert not torch.equal(first, generate_ids(model, prompt, 16, temperature=1.0, seed=4))
    logits = torch.tensor([[0.1, 2.0, 1.9]])
    assert next_token(logits, 0.0, None, None, None).tolist() == [1]


def test_stop_string_cuts_the_text_and_streams_the_rest(compose):
    model = language_model(compose("task=generate"))
    full = generate_text(model, TOKENIZER, ["ab"], 30, temperature=0)[0]
    stop = full[5:7]
    streamed: list[str] = []
    cut = generate_text(
        model,
        TOKENIZER,
        ["ab"],
        30,
        stop=stop,
        temperature=0,
        on_text=lambda _, t: streamed.append(t),
    )[0]
    assert cut == full[: full.index(stop)] and "".join(streamed) == cut


def test_learned_positions_refuse_more_than_max_len(compose):
    cfg = compose("task=generate", "model.positions=learned", "model.max_len=16")
    model = language_model(cfg)
    generate_ids(model, [TOKENIZER.encode("abcdef")], 11)  # 6 + 11 - 1 = 16 positions fit
    with pytest.raises(ConfigError, match="max_new_tokens=12.*model.max_len=16"):
        generate_ids(model, [TOKENIZER.encode("abcdef")], 12)


def test_completions_count_the_generated_ids_not_the_text_re_encoded(compose):
    """Random bytes decode to U+FFFD where they are not UTF-8, which re-encodes as 3 bytes: the
    count generate.py printed came from that ("80 tokens" for max_new_tokens=50)."""
    tokenizer = ByteTokenizer()
    model = language_model(compose("task=generate"), tokenizer)
    completions = generate_completions(model, tokenizer, ["ab", "xyz"], 50, temperature=1.0)
    assert [c.n_tokens for c in completions] == [50, 50]
    assert sum(len(tokenizer.encode(c.text)) for c in completions) > 100  # the old count


def test_the_count_stops_at_eos_and_keeps_the_stop_strings_tokens(compose):
    model = language_model(compose("task=generate"))
    greedy = generate_ids(model, [TOKENIZER.encode("ab")], 30, temperature=0)[0].tolist()
    first_new = next(i for i in range(2, 30) if greedy[i] not in greedy[:i])  # a fresh token id
    tokenizer = CharTokenizer().fit(["abcdefghij klmnop\n"])
    tokenizer.eos_id = greedy[first_new]  # as a pretrained model's EOS: ends the row unseen
    (ended,) = generate_completions(model, tokenizer, ["ab"], 30, temperature=0)
    assert ended.n_tokens == first_new and ended.text == TOKENIZER.decode(greedy[:first_new])
    stop = TOKENIZER.decode(greedy[first_new : first_new + 2])
    (cut,) = generate_completions(model, TOKENIZER, ["ab"], 30, stop=stop, temperature=0)
    assert cut.text == ended.text and cut.n_tokens == first_new + 2  # the stop's 2 tokens too


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": float("nan")}, "temperature=nan: must be a finite number >= 0"),
        ({"temperature": float("inf")}, "temperature=inf: must be a finite number >= 0"),
        ({"temperature": "hot"}, "temperature=hot: must be a finite number >= 0"),
        ({"temperature": -1}, "temperature=-1: must be a finite number >= 0"),
        ({"top_k": True}, "top_k=True: must be an integer >= 1"),
        ({"top_k": "5"}, "top_k=5: must be an integer >= 1"),
        ({"top_p": float("nan")}, "top_p=nan: must be in \\(0, 1\\]"),
        ({"top_p": "all"}, "top_p=all: must be in \\(0, 1\\]"),
        ({"max_new_tokens": 2.5}, "max_new_tokens=2.5: must be an integer >= 1"),
    ],
)
def test_sampling_values_the_sampler_cannot_honour_name_their_key(values, message):
    settings = {"max_new_tokens": 5, "temperature": 0.8, "top_k": None, "top_p": None} | values
    with pytest.raises(ConfigError, match=message):
        check_sampling(**settings)


def test_any_of_several_eos_ids_ends_a_row_and_the_batch_stops_when_all_ended(compose):
    """Llama 3 declares <|end_of_text|> and <|eot_id|>: each one must end a row (only the
    first id was kept, so <|eot_id|> never stopped a reply)."""
    model = language_model(compose("task=generate"))
    prompts = [TOKENIZER.encode("ab"), TOKENIZER.encode("fed")]
    greedy = generate_ids(model, prompts, 30, temperature=0)
    assert greedy[:, :4].tolist() == [[11, 18, 18, 6], [13, 6, 17, 16]]  # 17, 18: one row each
    ended = generate_ids(model, prompts, 30, temperature=0, eos_ids=[18, 17])
    assert ended.tolist() == [[11, 18, 18], [13, 6, 17]]  # row 0 ended at 1, row 1 at 2
    only_first = generate_ids(model, prompts, 30, temperature=0, eos_ids=[18])
    assert only_first.shape == (2, 30)  # row 1 never produces 18
