"""The answer scores of eval.py mode=sft, pinned on hand-computed examples."""

import math

import pytest

from lm_lab.eval.sft_scores import Scored, by_kind, rouge_l


def test_rouge_l_is_the_lcs_f_measure():
    # LCS("the cat sat", "the cat sat down") = 3 words: P = 3/3, R = 3/4, F = 2PR/(P+R) = 6/7
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(6 / 7, abs=1e-4)
    # LCS("a b c d", "a x c y d") = a c d: P = 3/4, R = 3/5, F = 2/3
    assert rouge_l("a b c d", "a x c y d") == pytest.approx(2 / 3, abs=1e-4)
    assert rouge_l("The Cat, sat!", "the cat sat") == pytest.approx(1.0)  # case, punctuation
    assert rouge_l("", "the cat") == 0.0 and rouge_l("dogs bark", "the cat") == 0.0


def test_exact_match_ignores_case_and_outer_space_only():
    assert Scored.of("classify", "Data", "  data\n", 0.0, 1).exact_match == 1.0
    assert Scored.of("classify", "data", "data.", 0.0, 1).exact_match == 0.0
    assert Scored.of("classify", "Sci/Tech", "sci/tech", 0.0, 1).exact_match == 1.0


def test_scores_by_kind_and_overall():
    rows = [
        Scored.of("classify", "data", "Data", nll=1.0, n_tokens=1),
        Scored.of("classify", "text", "files", nll=3.0, n_tokens=1),
        Scored.of("qa", "the cat sat down", "the cat sat", nll=2.0, n_tokens=4),
    ]
    scores = by_kind(rows)
    assert list(scores) == ["classify", "qa", "overall"]
    assert scores["classify"]["exact_match"] == 0.5 and scores["classify"]["n"] == 2
    assert scores["classify"]["rouge_l"] == pytest.approx(0.5)
    assert scores["qa"]["exact_match"] == 0.0
    assert scores["qa"]["rouge_l"] == pytest.approx(6 / 7, abs=1e-4)
    # token-weighted: exp(summed loss / tokens), not a mean of per-row perplexities
    assert scores["classify"]["response_ppl"] == pytest.approx(math.exp(4.0 / 2))
    assert scores["overall"]["response_ppl"] == pytest.approx(math.exp(6.0 / 6))
    assert scores["overall"]["exact_match"] == pytest.approx(1 / 3)
    assert scores["overall"]["rouge_l"] == pytest.approx((1 + 0 + 6 / 7) / 3, abs=1e-4)
