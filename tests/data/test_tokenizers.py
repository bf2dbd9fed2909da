"""Every tokenizer round-trips text and survives JSON, which is how checkpoints carry it."""

import pytest

from lm_lab.data.tokenization.tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    IdTokenizer,
    Tokenizer,
    from_json,
    load,
)
from lm_lab.utils.errors import ConfigError

TRAIN = [
    "The quick brown fox jumps over the lazy dog.\n\n  Indented\ttabs and  double spaces.",
    "def f(x):\n    return x + 1  # comment\n",
    "Unicode: café, naïve, 日本語, emoji 🎉, math ∑ ≤ ∞.",
] * 20
SAMPLES = [TRAIN[0], TRAIN[1], TRAIN[2], "", "   leading and trailing   ", "\n\n\n"]


def fitted(kind: str) -> Tokenizer:
    tok = {"char": CharTokenizer(), "byte": ByteTokenizer(), "bpe": BPETokenizer(vocab_size=300)}
    return tok[kind].fit(TRAIN)


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_decode_inverts_encode(kind):
    tok = fitted(kind)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_byte_level_tokenizers_round_trip_unseen_text(kind):
    text = "Ζεύς — never seen in training: ü, ß, 🚀, \u00a0 and \r\n line ends"
    assert fitted(kind).decode(fitted(kind).encode(text)) == text


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_decode_skips_padding(kind):
    tok = fitted(kind)
    ids = tok.encode("fox")
    assert tok.decode([tok.pad_id, *ids, tok.pad_id, tok.pad_id]) == "fox"


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_save_and_load_give_the_same_tokenizer(kind, tmp_path):
    tok = fitted(kind)
    tok.save(tmp_path / "sub" / "tokenizer.json")
    loaded = load(tmp_path / "sub" / "tokenizer.json")
    again = from_json(tok.to_json())
    for other in (loaded, again):
        assert type(other) is type(tok)
        assert (other.vocab_size, other.pad_id) == (tok.vocab_size, tok.pad_id)
        assert [other.encode(t) for t in SAMPLES] == [tok.encode(t) for t in SAMPLES]
    assert f'"kind": "{kind}"' in tok.to_json()


def test_char_tokenizer_reserves_pad_and_maps_unseen_chars_to_unk():
    tok = CharTokenizer().fit(["abc"])
    assert tok.pad_id == 0 and tok.vocab_size == 5  # pad, unk, a, b, c
    assert tok.encode("abz") == [2, 3, tok.unk_id]
    assert 0 not in tok.encode("cab")


def test_byte_tokenizer_needs_no_fitting():
    tok = ByteTokenizer()
    assert tok.is_fitted and tok.vocab_size == 257 and tok.pad_id == 256
    assert tok.encode("é") == list("é".encode())


def test_byte_decode_replaces_invalid_utf8_instead_of_failing():
    """A sampled byte sequence need not be valid UTF-8 (a character cut in half, a stray
    continuation byte): decode must still return text, one U+FFFD per bad sequence."""
    tok = ByteTokenizer()
    assert tok.decode([0xE2, 0x82, 0xAC]) == "\u20ac"  # a whole euro sign
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # cut before its last byte
    assert tok.decode([104, 0xFF, 105, 0x80]) == "h\ufffdi\ufffd"  # never valid, stray byte
    assert tok.decode([0xF0, 0x9F, 33]) == "\ufffd!"  # a cut 4-byte character, then "!"


def test_char_tokenizer_counts_unknown_ids_others_have_none():
    tok = CharTokenizer().fit(["abc"])
    assert tok.count_unknown(tok.encode("abzzy")) == 3
    assert ByteTokenizer().count_unknown(ByteTokenizer().encode("any text")) == 0


def test_bpe_learns_merges_and_respects_vocab_size():
    tok = fitted("bpe")
    assert tok.pad_id == 0 and 257 < tok.vocab_size <= 300
    assert len(tok.encode(TRAIN[0])) < len(TRAIN[0].encode())  # merges shorten the text


def test_unfitted_tokenizers_say_so():
    assert not CharTokenizer().is_fitted and not BPETokenizer().is_fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        BPETokenizer().encode("x")


def test_load_of_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.json")


def test_a_saved_bpe_tokenizer_json_is_a_hugging_face_file(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    tok = fitted("bpe")
    tok.save(tmp_path / "tokenizer.json")
    theirs = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert theirs.encode(SAMPLES[0], add_special_tokens=False).ids == tok.encode(SAMPLES[0])
    assert '"kind": "bpe"' in (tmp_path / "lm_lab_tokenizer.json").read_text()


def test_a_run_dir_written_before_the_split_still_loads(tmp_path):
    tok = fitted("bpe")
    (tmp_path / "tokenizer.json").write_text(tok.to_json())  # the old single-file wrapper
    assert load(tmp_path / "tokenizer.json").encode(SAMPLES[1]) == tok.encode(SAMPLES[1])


def test_an_id_tokenizer_has_the_base_eos_ids():
    """No EOS id: generation on synthetic ids runs to max_new_tokens (the PretrainedTokenizer
    override that reads a folder's EOS list once sat here too, on an attribute never set)."""
    tokenizer = IdTokenizer(12)
    assert tokenizer.eos_ids == [] and tokenizer.encode("3 0 11") == [3, 0, 11]
