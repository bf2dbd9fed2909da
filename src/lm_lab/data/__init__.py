"""Data layer, one concept per sub-package: `sources` load raw text splits, `tokenization` turns
text into ids, `preparation` writes a corpus as token shards, and `loaders` build classification
examples or language-model windows into batches. Knows no model."""
