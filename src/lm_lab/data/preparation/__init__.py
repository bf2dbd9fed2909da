"""Preparation: a corpus streamed once through its tokenizer into token shards on disk (the
cache key, manifest and memory-mapped reading), so language-model runs never hold text."""
