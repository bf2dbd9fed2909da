"""Reports over finished runs: `python -m lm_lab.report <multirun dir | run dirs> [--out DIR]`.

`jobs` reads each run dir, `summary` turns jobs into table rows (mean +- std over seeds),
`plots` draws PNGs and `write` renders Markdown, CSV and a rich terminal table.
"""
