"""Scores of generated answers against references, per sub-task (`kind`) and overall.

Exact match compares the texts after strip, case-fold and whitespace collapse: the score of
label-like kinds (an answer is right or wrong), reported for every kind. ROUGE-L is
torchmetrics' (`rouge_score`, rougeL only: rougeLsum would need nltk; no stemmer), the
F-measure of the longest common subsequence of the two texts' words. Response perplexity is
token-weighted: exp(summed loss / scored tokens) over the kind's conversations, not a mean of
per-conversation perplexities.
"""

import math
from collections import defaultdict
from dataclasses import dataclass

LABEL_KINDS = ("classify",)  # kinds whose answer is a label: exact match is their score


@dataclass(frozen=True)
class Scored:
    """One held-out conversation after generation and teacher forcing; `of` scores it once."""

    kind: str
    reference: str
    response: str
    nll: float  # summed loss over the reference response's scored tokens
    n_tokens: int  # those tokens
    exact_match: float
    rouge_l: float

    @classmethod
    def of(cls, kind: str, reference: str, response: str, nll: float, n_tokens: int) -> "Scored":
        match = float(normalize(response) == normalize(reference))
        return cls(kind, reference, response, nll, n_tokens, match, rouge_l(response, reference))


def normalize(text: str) -> str:
    """Case-folded, whitespace collapsed: "  Data " and "data" match."""
    return " ".join(text.casefold().split())


def rouge_l(response: str, reference: str) -> float:
    """ROUGE-L F-measure of one response against one reference (0 when either has no word).
    torchmetrics loads here, once answers are scored: eval.py checks sft.* without it."""
    from torchmetrics.functional.text.rouge import rouge_score

    scores = rouge_score(response, reference, rouge_keys="rougeL", use_stemmer=False)
    return float(scores["rougeL_fmeasure"])


def summarize(rows: list[Scored]) -> dict[str, float | int | str]:
    """n, exact match, ROUGE-L (means), response ppl (token-weighted) of a group of rows."""
    n_tokens = sum(row.n_tokens for row in rows)
    return {
        "n": len(rows),
        "exact_match": sum(row.exact_match for row in rows) / len(rows),
        "rouge_l": sum(row.rouge_l for row in rows) / len(rows),
        "response_ppl": math.exp(sum(row.nll for row in rows) / n_tokens) if n_tokens else None,
        "response_tokens": n_tokens,
    }


def by_kind(rows: list[Scored]) -> dict[str, dict[str, float | int | str]]:
    """summarize() per kind (in order of first appearance), then "overall" over every row."""
    groups: dict[str, list[Scored]] = defaultdict(list)
    for row in rows:
        groups[row.kind].append(row)
    return {kind: summarize(group) for kind, group in groups.items()} | {"overall": summarize(rows)}
