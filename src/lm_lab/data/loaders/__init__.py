"""Loaders: splits and token shards turned into batches. The datamodules (text and synthetic),
classification examples, language-model windows, data-parallel shares, mid-epoch resumable
samplers, and the data counts' one check (no Lightning, so `cli.validate` can run it early)."""
