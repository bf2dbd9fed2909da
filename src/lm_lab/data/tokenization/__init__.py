"""Tokenization: text to ids and back (characters, bytes, BPE, a pretrained model's own
tokenizer), serialised with the checkpoint, and a pretrained model's chat template."""
