"""The one logging channel: rank 0 only unless a line is per rank, tables logged as text."""

import logging

import pytest
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from rich.table import Table

from lm_lab.utils.logging import get_logger, render


@pytest.fixture
def rank(monkeypatch):
    def _set(value: int) -> None:
        monkeypatch.setattr(rank_zero_only, "rank", value, raising=False)

    return _set


def test_lines_are_written_on_rank_zero_only(rank, caplog) -> None:
    log = get_logger("lm_lab.test_logging")
    with caplog.at_level(logging.INFO, logger="lm_lab"):
        rank(1)
        log.info("from rank one")
        log.info("every rank says this", per_rank=True)
        rank(0)
        log.info("from rank zero")
    assert [r.getMessage() for r in caplog.records] == [
        "[rank 1] every rank says this",
        "from rank zero",
    ]


def test_before_lightning_sets_the_rank_the_launchers_rank_is_used(monkeypatch, caplog) -> None:
    """Logging no longer loads Lightning: until it does (and sets `.rank`), a torchrun rank 1
    still writes only its per-rank lines."""
    monkeypatch.delattr(rank_zero_only, "rank", raising=False)
    monkeypatch.setenv("RANK", "1")
    log = get_logger("lm_lab.test_logging")
    with caplog.at_level(logging.INFO, logger="lm_lab"):
        log.info("from rank one")
        log.info("every rank says this", per_rank=True)
    assert [r.getMessage() for r in caplog.records] == ["[rank 1] every rank says this"]


def test_module_names_are_put_under_the_lm_lab_logger() -> None:
    assert get_logger("scripts.something").logger.name == "lm_lab.scripts.something"
    assert get_logger("lm_lab.sizing").logger.name == "lm_lab.sizing"


def test_a_rich_table_renders_to_plain_text() -> None:
    table = Table("group", "trainable")
    table.add_row("lora", "1,024")
    text = render(table)
    assert "lora" in text and "1,024" in text and "\x1b[" not in text
