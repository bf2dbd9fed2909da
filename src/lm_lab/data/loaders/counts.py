"""The data counts (data.<key>: batch size, lengths, window counts, workers) and their one
check, in a module without Lightning: the datamodule's constructor runs it, and
`cli.validate` before anything is built or Lightning (~4 s of imports) loads."""

from collections.abc import Mapping
from typing import Any

from lm_lab.utils.errors import ConfigError

# the datamodule's counts: key, least value, whether null is allowed (checked by check_counts)
COUNTS = (
    ("batch_size", 1, False),
    ("max_length", 1, False),
    ("block_size", 2, False),  # a window of one token has nothing to predict from
    ("train_windows_per_epoch", 1, False),
    ("eval_windows", 1, True),
    ("max_train_examples", 1, True),
    ("max_eval_examples", 1, True),
    ("num_workers", 0, False),
    ("num_proc", 1, True),
)


def check_counts(values: Mapping[str, Any]) -> None:
    """The one check of the data counts (data.<key>): integers >= their least value, or null
    where allowed. The constructor runs it, and train.py before anything is built."""
    for key, minimum, optional in COUNTS:
        if key not in values:
            continue  # e.g. synthetic data has no max_length
        value = values[key]
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            hint = " or null" if optional else ""
            raise ConfigError(f"data.{key}={value!r}: must be an integer >= {minimum}{hint}")
