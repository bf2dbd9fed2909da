"""TF-IDF + LR on hand-made splits whose scores can be worked out by hand."""

import pytest

from lm_lab.baselines.tfidf_lr import TfidfLogisticRegression

POS, NEG = 1, 0
TRAIN = (
    ["good film", "good movie", "good plot", "bad film", "bad movie"],
    [POS, POS, POS, NEG, NEG],
)


def test_a_token_seen_only_in_test_cannot_be_used():
    """`qqq` marks every positive test text and `zzz` every negative one; neither occurs in
    train, so a baseline fitted on train alone sees identical test texts and scores exactly
    half. Fitted on anything that holds test texts, it would score 1.0."""
    test = (["the film qqq"] * 4 + ["the film zzz"] * 4, [POS] * 4 + [NEG] * 4)
    scores = TfidfLogisticRegression().fit_score(TRAIN, TRAIN, test)
    assert scores["test/baseline_acc"] == 0.5


def test_the_same_token_seen_in_train_is_used():
    """The control: the planted tokens decide the labels once train shows them."""
    train = (["the film qqq"] * 3 + ["the film zzz"] * 3, [POS] * 3 + [NEG] * 3)
    test = (["the film qqq", "the film zzz"], [POS, NEG])
    assert TfidfLogisticRegression().fit_score(train, train, test)["test/baseline_acc"] == 1.0


def test_scores_accuracy_and_macro_f1_on_their_splits():
    """Predictions good->pos, bad->neg. Test: true [pos, pos, pos, neg], predicted
    [pos, pos, neg, neg]: acc 3/4; F1 pos = 2*2/(2*2+0+1) = 0.8, F1 neg = 2*1/(2*1+1+0) = 2/3,
    macro (0.8 + 2/3) / 2 = 0.7333 (micro F1 would be 0.75). Validation: one of two right."""
    val = (["good film", "bad film"], [POS, POS])
    test = (["good", "good good", "bad", "bad bad"], [POS, POS, POS, NEG])
    scores = TfidfLogisticRegression().fit_score(TRAIN, val, test)
    assert scores == {
        "val/baseline_acc": 0.5,
        "test/baseline_acc": 0.75,
        "test/baseline_f1": pytest.approx((0.8 + 2 / 3) / 2),
    }


@pytest.mark.parametrize("Cs", [[1e-6, 16], [16, 1e-6]])
def test_c_is_picked_on_validation(Cs):  # noqa: N803
    """C=1e-6 leaves only the (unpenalised) intercept: it predicts the majority class (pos)
    everywhere and scores 0.5 on validation; C=16 separates the words and scores 1.0. Whatever
    the order, the test is scored with C=16."""
    val = test = (["good film", "bad film"], [POS, NEG])
    scores = TfidfLogisticRegression(Cs=Cs).fit_score(TRAIN, val, test)
    assert scores["val/baseline_acc"] == 1.0
    assert scores["test/baseline_acc"] == 1.0


def test_tiny_c_alone_predicts_the_majority_class():
    """The other half of the test above: C=1e-6 is indeed the weak choice."""
    val = test = (["good film", "bad film"], [POS, NEG])
    assert TfidfLogisticRegression(Cs=[1e-6]).fit_score(TRAIN, val, test)["val/baseline_acc"] == 0.5


def test_no_c_is_a_config_error():
    with pytest.raises(ValueError, match="task.baseline.Cs"):
        TfidfLogisticRegression(Cs=[])
