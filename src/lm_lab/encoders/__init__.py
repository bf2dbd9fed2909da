"""Sequence encoders behind one contract (`base.Encoder`), and the `Backbone` that embeds tokens."""
