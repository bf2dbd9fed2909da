"""ICL scorer and prompt builder on hand-set logits: exact log-probs, acc and acc_norm."""

import math
import random

import pytest
import torch

from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.eval.icl import (
    Prompter,
    PromptTemplate,
    calibrated,
    check_fits,
    evaluate_shots,
    label_groups,
    label_logprobs,
    predictions,
    sample_demos,
    whole_prompt,
)
from lm_lab.utils.errors import ConfigError

TOK = CharTokenizer().fit(["abc:xyz\n"])
TEMPLATE = PromptTemplate(demo="{text}:{label}", verbalizers={"long": "ab", "short": "c"})


def bigram_model(next_probs: dict[str, dict[str, float]]):
    """A stub LM whose next-token distribution depends on the current token only; characters
    not listed share what probability is left."""
    V = TOK.vocab_size
    table = torch.full((V, V), 1e-9)
    for current, dist in next_probs.items():
        row = torch.full((V,), (1 - sum(dist.values())) / (V - len(dist)))
        for char, p in dist.items():
            row[TOK.encode(char)[0]] = p
        table[TOK.encode(current)[0]] = row
    return lambda ids, at: table.log()[ids[at[:, 0], at[:, 1]]]  # (B, T), (N, 2) -> (N, V)


# after ":" the LM says "a" (0.3) or "c" (0.15); after "a" it says "b" (0.3)
MODEL = bigram_model({":": {"a": 0.3, "c": 0.15}, "a": {"b": 0.3}})
PROMPTER = Prompter(TEMPLATE, TOK)


def scorer(prefix):
    return whole_prompt(MODEL, prefix)


def test_continuation_logprob_is_the_sum_over_its_tokens():
    prompts = [TOK.encode("xy:"), TOK.encode("zzzzz:")]  # different lengths: right padding
    conts = [TOK.encode("ab"), TOK.encode("c")]
    scores = label_logprobs(scorer(TOK.encode("q")), prompts, conts, TOK.pad_id, batch_size=1)
    expected = [[2 * math.log(0.3), math.log(0.15)]] * 2  # (N, L): the bigram reads ":" alone
    assert scores.tolist() == [pytest.approx(row, rel=1e-5) for row in expected]


def test_acc_sums_log_probs_and_acc_norm_divides_by_characters():
    # "ab": log .3 + log .3 = -2.41 (per char -1.20); "c": log .15 = -1.90 (per char -1.90)
    scores = label_logprobs(scorer([]), [TOK.encode("x:")], [TOK.encode("ab"), TOK.encode("c")], 0)
    by_sum, by_char = predictions(scores, [2, 1], ["long", "short"])
    assert by_sum == ["short"] and by_char == ["long"]


def test_evaluate_shots_reports_exact_accuracies():
    pool = [("x", "long"), ("y", "short")]
    queries = [("z", "short"), ("zz", "short"), ("xz", "long")]
    cell = evaluate_shots(scorer, PROMPTER, pool, queries, 0, 0, True, budget=64)
    assert cell["acc"] == pytest.approx(2 / 3) and cell["acc_norm"] == pytest.approx(1 / 3)


def test_calibration_divides_out_the_content_free_label_distribution():
    # label 0 wins both prompts raw, by 3 and by 1 nats; the content-free prompt favours it by 2
    scores = torch.tensor([[0.0, -3.0], [0.0, -1.0]])
    content_free = torch.tensor([[0.0, -2.0]]).expand(2, 2)
    assert calibrated(scores, content_free).tolist() == [0, 1]


def test_calibrated_cell_scores_the_content_free_query_under_the_same_demos():
    """The bigram stub scores a label from the ":" before it alone, so the query and the
    content-free prompt agree exactly: calibration leaves every label tied (index 0 wins)."""
    pool = [("x", "long"), ("y", "short")]
    queries = [("z", "short"), ("zz", "short"), ("xz", "long")]
    cell = evaluate_shots(scorer, PROMPTER, pool, queries, 1, 0, True, 64, content_free="y")
    assert cell["acc"] == pytest.approx(2 / 3) and cell["acc_calib"] == pytest.approx(1 / 3)


POOL = [(f"text {i}", "pos" if i % 3 else "neg") for i in range(60)]


def test_demos_are_deterministic_for_a_seed():
    groups = label_groups(POOL, balanced=True)
    draw = [sample_demos(POOL, groups, 8, random.Random(seed), {"q"}) for seed in (1, 1, 2)]
    assert draw[0] == draw[1] and draw[0] != draw[2]


def test_no_query_appears_among_the_demos():
    pool = POOL[:6]
    groups = label_groups(pool, balanced=False)
    for seed in range(20):
        queries = {pool[seed % 6][0], pool[(seed + 1) % 6][0]}
        demos = sample_demos(pool, groups, 4, random.Random(seed), queries)
        assert not queries & {text for text, _ in demos} and len(demos) == 4


def test_balanced_demos_give_each_label_an_equal_share():
    demos = sample_demos(POOL, label_groups(POOL, balanced=True), 8, random.Random(0), {"q"})
    assert sorted(label for _, label in demos) == ["neg"] * 4 + ["pos"] * 4


def test_shots_that_do_not_fit_the_context_fail_in_one_line():
    prompts = PROMPTER.prompts([("x", "long"), ("y", "short")], ["xyz"])  # "x:ab\n\ny:c\n\n"
    assert (
        TOK.decode(prompts.prefix) == "x:ab\n\ny:c\n\n" and TOK.decode(prompts.queries[0]) == "xyz:"
    )
    check_fits(prompts, [TOK.encode("ab")], 2, budget=17)  # prefix 11 + query 4 + label 2
    with pytest.raises(ConfigError, match="icl.shots: k=2 demonstrations take 11 tokens"):
        check_fits(prompts, [TOK.encode("ab")], 2, budget=16)
    with pytest.raises(ConfigError, match="query with its label takes 6 tokens, more than the 5"):
        check_fits(PROMPTER.prompts([], ["xyz"]), [TOK.encode("ab")], 0, budget=5)


def test_template_without_a_final_label_fails_fast():
    with pytest.raises(ConfigError, match="icl.template.demo"):
        PromptTemplate(demo="{label}: {text}")
