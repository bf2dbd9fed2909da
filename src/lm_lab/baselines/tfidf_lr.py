"""TF-IDF + logistic regression: the linear reference every text classifier must beat.

Word 1-2-grams and `char_wb` 2-5-grams (sublinear tf), vectorizers and model fitted on the
training split only; C picked on the validation split; test scored once with the chosen C.
Knows nothing of models or tokenizers: it reads raw texts and label ids.
"""

import time
from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import FeatureUnion

from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

Labelled = tuple[Sequence[str], Sequence[int]]  # raw texts of one split, their label ids 0..C-1


class TfidfLogisticRegression:
    """Fits on train, tunes C on validation, scores test: `val/baseline_acc`,
    `test/baseline_acc`, `test/baseline_f1` (macro, like the model's `test/f1`)."""

    def __init__(
        self,
        word_ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] = (2, 5),
        Cs: Sequence[float] = (1.0, 4.0, 16.0),  # noqa: N803 (scikit-learn's name)
        max_iter: int = 1000,
    ) -> None:
        if not Cs:
            raise ValueError("task.baseline.Cs: give at least one value of C")
        self.word_ngrams, self.char_ngrams = tuple(word_ngrams), tuple(char_ngrams)
        self.Cs, self.max_iter = [float(c) for c in Cs], max_iter

    def features(self) -> FeatureUnion:
        return FeatureUnion(
            [
                ("word", TfidfVectorizer(ngram_range=self.word_ngrams, sublinear_tf=True)),
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb", ngram_range=self.char_ngrams, sublinear_tf=True
                    ),
                ),
            ]
        )

    def fit_score(self, train: Labelled, val: Labelled, test: Labelled) -> dict[str, float]:
        started = time.perf_counter()
        features = self.features()
        (train_texts, y_train), (val_texts, y_val), (test_texts, y_test) = train, val, test
        x_train = features.fit_transform(train_texts)  # (N, F) sparse; train's vocabulary only
        x_val, x_test = features.transform(val_texts), features.transform(test_texts)
        val_acc, test_pred = {}, {}
        for c in self.Cs:  # independent fits, as specified (warm starts shifted the chosen C)
            model = LogisticRegression(C=c, max_iter=self.max_iter).fit(x_train, y_train)
            val_acc[c] = accuracy_score(y_val, model.predict(x_val))
            test_pred[c] = model.predict(x_test)
        best_c = max(self.Cs, key=lambda c: val_acc[c])  # ties: the first listed
        predicted = test_pred[best_c]
        log.info(
            f"baseline tfidf_lr: C={best_c:g} of {self.Cs} on validation, {x_train.shape[1]} "
            f"features, {time.perf_counter() - started:.1f}s"
        )
        return {
            "val/baseline_acc": float(val_acc[best_c]),
            "test/baseline_acc": float(accuracy_score(y_test, predicted)),
            "test/baseline_f1": float(f1_score(y_test, predicted, average="macro")),
        }
