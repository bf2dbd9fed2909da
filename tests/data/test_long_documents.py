"""Long documents reach the tokenizer in pieces of at most PIECE_CHARS characters, a large text
file read a piece at a time, and the ids equal the whole file's except at the pinned cuts."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from lm_lab.data.preparation.prepare import MemoryCorpus, prepare
from lm_lab.data.sources import documents
from lm_lab.data.sources.documents import (
    TextFiles,
    Unreadable,
    check_utf8,
    cut,
    cut_point,
    stream_text,
)
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import BPETokenizer, CharTokenizer

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "mu"]


def lines_text(n: int) -> str:
    """Lines of words with the whitespace that cut points must respect: blank lines, runs of
    spaces, indented lines, a line of spaces."""
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 9)]
        sep = "  " if i % 5 == 0 else " "
        indent = "    " if i % 4 == 0 else ""
        out.append(indent + sep.join(words) + ("\n\n" if i % 6 == 0 else "\n"))
        if i % 11 == 0:
            out.append("   \n")
    return "".join(out)


def test_cut_points_are_pinned():
    # before the whitespace run around the last newline ("  \n\n" after "cd")
    assert cut_point("ab\ncd  \n\nef gh", 12) == 5
    # no newline: before the last run of spaces or tabs
    assert cut_point("aaaa bb\tcc dd", 10) == 7
    # nothing but whitespace before the newline and the space: at the limit
    assert cut_point("   \n  xxxxxxxxxxxxxx", 10) == 10
    assert cut_point("x" * 25, 10) == 10  # no whitespace at all: at the limit


def test_cut_makes_pieces_of_at_most_piece_chars(monkeypatch):
    monkeypatch.setattr(documents, "PIECE_CHARS", 15)
    text = "alpha beta\ngamma delta\nepsilon"
    assert list(cut(text)) == ["alpha beta", "\ngamma delta", "\nepsilon"]
    assert list(cut("short")) == ["short"]


def spy_encode_batch(monkeypatch, tokenizer_type: type) -> list[int]:
    """Lengths of the texts encode_batch is given from now on."""
    lengths: list[int] = []
    real = tokenizer_type.encode_batch

    def spied(self, texts):
        lengths.extend(map(len, texts))
        return real(self, texts)

    monkeypatch.setattr(tokenizer_type, "encode_batch", spied)
    return lengths


def train_ids(prepared) -> list[int]:
    return np.concatenate(prepared.shards("train").arrays).astype(np.int64).tolist()


def test_a_long_file_streams_in_pieces_whose_ids_are_the_whole_files(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "PIECE_CHARS", 200)
    text = lines_text(300)  # ~12,000 characters: more than 50 pieces
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "validation.txt").write_text(lines_text(5))
    pieces = list(stream_text(tmp_path / "train.txt"))
    assert pieces == list(cut(text)) and "".join(pieces) == text
    assert len(pieces) > 50 and all(len(p) <= 200 for p in pieces)
    lengths = spy_encode_batch(monkeypatch, BPETokenizer)
    prepared = prepare(TextFiles(tmp_path), BPETokenizer(vocab_size=300), None)
    assert max(lengths) <= 200 and len(lengths) > 50
    assert train_ids(prepared) == prepared.tokenizer.encode(text)  # the whole file's ids
    assert prepared.stats()["train/documents"] == 1
    assert prepared.stats()["train/chars"] == len(text)


def test_a_cut_without_whitespace_is_the_only_place_ids_can_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "PIECE_CHARS", 100)
    text = "abcab" * 50  # 250 characters, no whitespace: cut at 100 and 200
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "validation.txt").write_text("abc")
    prepared = prepare(TextFiles(tmp_path), BPETokenizer(vocab_size=300), None)
    encode = prepared.tokenizer.encode
    assert train_ids(prepared) == encode(text[:100]) + encode(text[100:200]) + encode(text[200:])
    assert prepared.tokenizer.decode(train_ids(prepared)) == text


def test_in_memory_sources_cut_long_texts_too(monkeypatch):
    monkeypatch.setattr(documents, "PIECE_CHARS", 100)
    texts = [lines_text(40), "short one\n"]
    splits = {"train": Split(texts, origin="t.csv"), "validation": Split(["val text\n"])}
    lengths = spy_encode_batch(monkeypatch, BPETokenizer)
    prepared = prepare(MemoryCorpus(splits), BPETokenizer(vocab_size=300), None)
    assert max(lengths) <= 100
    separator = prepared.tokenizer.encode("\n\n")
    whole = prepared.tokenizer.encode(texts[0]) + separator + prepared.tokenizer.encode(texts[1])
    assert train_ids(prepared) == whole


def test_a_large_file_not_utf8_at_its_end_is_skipped_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "PIECE_CHARS", 100)
    (tmp_path / "train").mkdir()
    (tmp_path / "validation").mkdir()
    (tmp_path / "train" / "bad.txt").write_bytes(b"bad file line\n" * 100 + b"\xff")
    (tmp_path / "train" / "good.txt").write_text("good line\n" * 30)
    (tmp_path / "train" / "spaces.txt").write_text(" \n" * 300)  # streamed, yet empty
    (tmp_path / "validation" / "v.txt").write_text("valid\n")
    prepared = prepare(TextFiles(tmp_path), CharTokenizer(), None)
    stats = prepared.stats()
    assert stats["skipped/not_utf8"] == 1 and stats["skipped/empty"] == 1
    assert prepared.tokenizer.decode(train_ids(prepared)) == "good line\n" * 30  # no piece of it


def test_utf8_check_reads_blocks_and_names_the_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "READ_BYTES", 4)
    path = tmp_path / "a.txt"
    path.write_bytes("abcé€xyz".encode())  # é and € straddle block boundaries
    check_utf8(path)
    path.write_bytes("abcé€xy".encode() + b"\xff rest")
    with pytest.raises(Unreadable, match=r"not UTF-8 \(byte 10\)"):
        check_utf8(path)
    path.write_bytes(b"abc" + "€".encode()[:2])  # ends inside a character
    with pytest.raises(Unreadable, match=r"not UTF-8 \(byte 5\)"):
        check_utf8(path)


def test_a_piece_never_splits_the_bom_or_crlf_handling(tmp_path: Path, monkeypatch):
    """Streaming reads like the whole-file reader: BOM dropped, \\r\\n kept."""
    monkeypatch.setattr(documents, "PIECE_CHARS", 10)
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffline one\r\nline two\r\nline three\r\n".encode())
    assert "".join(stream_text(path)) == documents.read_text(path)


def test_byte_level_bpe_ids_never_change_at_a_whitespace_cut(monkeypatch):
    """Random texts of letters, digits, punctuation, accents and every kind of whitespace, cut
    into pieces of at most 20 characters: wherever every cut fell before whitespace that follows
    a non-space (all but the texts with a window of 20 whitespace characters), the pieces encode
    to the whole text's ids."""
    rng = np.random.default_rng(0)
    alphabet = list("ab1.,'é€") + [" ", " ", "  ", "\n", "\n\n", "\t", "\r\n", " \n"]
    texts = ["".join(rng.choice(alphabet, size=150)) for _ in range(200)]
    tok = BPETokenizer(vocab_size=300).fit(texts)
    monkeypatch.setattr(documents, "PIECE_CHARS", 20)
    soft = 0
    for text in texts:
        pieces = list(cut(text))
        cuts = itertools.pairwise(pieces)
        if all(not before[-1].isspace() and after[0].isspace() for before, after in cuts):
            soft += 1
            assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text), repr(text)
    assert soft >= 190
