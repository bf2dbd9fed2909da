"""The one Markdown table renderer: column order, cell formatting, header separator."""

from lm_lab.utils.markdown import markdown_table


def test_table_columns_follow_the_first_row_and_floats_have_three_decimals() -> None:
    rows = [{"k": 0, "acc": 0.5}, {"k": 4, "acc": 0.71234, "extra": 1}]
    assert markdown_table(rows) == ("| k | acc |\n| --- | --- |\n| 0 | 0.500 |\n| 4 | 0.712 |")


def test_explicit_columns_and_cell_formatter_win() -> None:
    rows = [{"a": 1, "b": None}]
    table = markdown_table(rows, cell=lambda v: "—" if v is None else f"<{v}>", columns=["b", "a"])
    assert table.splitlines()[2] == "| — | <1> |"
