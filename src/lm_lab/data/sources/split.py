"""The unit every source returns: the raw texts of one split and their labels."""

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from lm_lab.utils.errors import ConfigError


@dataclass
class Split:
    """Raw texts of one split.

    `labels` is None for unlabelled data (plain text); inside a labelled split a single entry may
    be None (e.g. pydoc topics): such texts serve language modelling and are dropped, and counted,
    by classification. `origin` names the file or corpus, so errors can point at it; `stats`
    holds the source's own counts (read, dropped by reason).
    """

    texts: list[str]
    labels: list[str | None] | None = None
    origin: str = ""
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(
                f"{self.origin}: {len(self.texts)} texts but {len(self.labels)} labels"
            )

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and any(label is not None for label in self.labels)


def check_disjoint(
    members: Mapping[str, Iterable[Hashable]], message: Callable[[str, str, Hashable], str]
) -> None:
    """Every source calls this where it assembles its splits, so that no document (a file, a
    data-set split) is in two of them: the first item found in two splits raises
    ConfigError(message(the split seen first, the other split, item))."""
    seen: dict[Hashable, str] = {}
    for split, items in members.items():
        for item in items:
            first = seen.setdefault(item, split)
            if first != split:
                raise ConfigError(message(first, split, item))


def text_key(text: str) -> str:
    """What makes two texts the same example: their words, whatever the case and spacing."""
    return " ".join(text.split()).casefold()


def drop_seen_in_evaluation(splits: dict[str, Split]) -> dict[str, Split]:
    """The splits with every training text that validation or test also holds taken out of
    train (and every validation text that test holds out of validation), counted as
    `<split>/dropped_in_<later split>`: a model must never be scored on what it trained on (10
    rows of the shared AG News train are test texts, 1 of SST-2's is). Evaluation splits stay
    whole, so their figures compare with the literature's."""
    order = [name for name in ("train", "validation", "test") if name in splits]
    result = dict(splits)
    for i, name in enumerate(order):
        later = {
            key: other for other in order[i + 1 :] for key in map(text_key, splits[other].texts)
        }
        split, keep, dropped = splits[name], [], {}
        for j, text in enumerate(split.texts):
            other = later.get(text_key(text)) if text.strip() else None  # empty: dropped later
            if other is None:
                keep.append(j)
            else:
                dropped[other] = dropped.get(other, 0) + 1
        if dropped:
            labels = None if split.labels is None else [split.labels[j] for j in keep]
            counts = {f"dropped_in_{other}": n for other, n in dropped.items()}
            result[name] = replace(
                split,
                texts=[split.texts[j] for j in keep],
                labels=labels,
                stats=split.stats | counts,
            )
    return result
