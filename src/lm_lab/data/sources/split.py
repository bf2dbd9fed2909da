"""The unit every source returns: the raw texts of one split and their labels."""

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

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
