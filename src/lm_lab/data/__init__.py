"""Data layer: sources load raw text splits, tokenizers turn text into ids, and the datamodule
builds classification examples or language-model windows. Knows no model."""
