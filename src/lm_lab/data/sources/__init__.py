"""Sources: where raw text comes from. Each loads its splits as `Split`s (texts and labels),
`load() -> {"train": Split, "validation": Split[, "test": Split]}`: CSV / JSON-lines / Parquet
records (`records.py`), corpora of many files read a document at a time (`documents.py`), the
built-in standard-library docstrings (`pydoc_corpus.py`) and Hugging Face data sets (`hf.py`).
Sources of instruction-tuning data (task=sft) also have `load_conversations()`
(`conversations.py`: the record formats). Knows no tokenizer. The file sources are re-exported
here so that each has the one address the configs and docs/architecture.md name
(`lm_lab.data.sources.CsvFiles`, ...)."""

from lm_lab.data.sources.documents import TextFiles
from lm_lab.data.sources.pydoc_corpus import PydocCorpus
from lm_lab.data.sources.records import CsvFiles, JsonlFiles, ParquetFiles
from lm_lab.data.sources.split import Split

__all__ = ["CsvFiles", "JsonlFiles", "ParquetFiles", "PydocCorpus", "Split", "TextFiles"]
