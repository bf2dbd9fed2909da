"""Corpora of many files prepared into token shards: every source layout, the held-out split,
the shards against direct tokenization, the cache's atomicity, and DDP shares."""

import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lm_lab.data.loaders.datamodule import TextDataModule
from lm_lab.data.loaders.language_modeling import RandomWindows, token_stream
from lm_lab.data.preparation import prepare as prepare_module
from lm_lab.data.preparation import shards
from lm_lab.data.preparation.prepare import chunks, encoded_chunks, prepare, training_sample
from lm_lab.data.preparation.shards import MANIFEST, TOKENIZER
from lm_lab.data.sources.documents import TextFiles
from lm_lab.data.tokenization.tokenizers import BPETokenizer, CharTokenizer, IdTokenizer
from lm_lab.data.tokenization.tokenizers import load as load_tokenizer
from lm_lab.utils.errors import ConfigError

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "mu"]


def text_of(i: int) -> str:
    """A distinct, deterministic document."""
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(20 + i % 13)) + f" #{i}\n"


def write_files(folder: Path, n: int, start: int = 0, suffix: str = ".txt") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    texts = [text_of(i) for i in range(start, start + n)]
    for i, text in enumerate(texts):
        (folder / f"doc{start + i:03d}{suffix}").write_text(text, encoding="utf-8")
    return texts


def documents_by_split(source: TextFiles) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for file in source.files():
        for split, text in source.documents(file, {}):
            out.setdefault(split, []).append(text)
    return out


# ---- sources -------------------------------------------------------------------------------


def test_train_and_validation_subfolders_any_depth(tmp_path):
    train = write_files(tmp_path / "train" / "a" / "b", 3) + write_files(tmp_path / "train", 2, 10)
    valid = write_files(tmp_path / "valid", 2, 20)
    (tmp_path / "train" / "notes.bin").write_bytes(b"\x00\x01")  # other suffix: ignored
    source = TextFiles(tmp_path)
    docs = documents_by_split(source)
    assert sorted(docs["train"]) == sorted(train) and docs["validation"] == valid
    assert source.ignored_files == 1 and "test" not in docs


def test_flat_folder_holds_out_a_deterministic_disjoint_fraction(tmp_path):
    texts = write_files(tmp_path, 200)
    first = documents_by_split(TextFiles(tmp_path, val_fraction=0.2, test_fraction=0.1))
    again = documents_by_split(TextFiles(tmp_path, val_fraction=0.2, test_fraction=0.1))
    assert first == again
    assert sorted(first["train"] + first["validation"] + first["test"]) == sorted(texts)
    assert not set(first["train"]) & set(first["validation"])
    assert 30 <= len(first["validation"]) <= 50 and 12 <= len(first["test"]) <= 30  # 40, 20
    other_seed = documents_by_split(TextFiles(tmp_path, val_fraction=0.2, seed=1))
    assert other_seed["validation"] != first["validation"]


def test_globs_choose_the_files_of_each_split(tmp_path):
    write_files(tmp_path / "src", 4, suffix=".py")
    write_files(tmp_path / "src", 3, 10, suffix=".md")
    docs = documents_by_split(TextFiles(tmp_path, train="src/*.py", validation="**/*.md"))
    assert len(docs["train"]) == 4 and len(docs["validation"]) == 3


def test_jsonl_gz_and_parquet_records_are_documents(tmp_path):
    records = [{"text": text_of(i)} for i in range(6)]
    with gzip.open(tmp_path / "part.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records[:4]))
        f.write('{"no_text": 1}\n{oops\n')  # no text field, bad JSON: skipped, counted
    pq.write_table(pa.table({"text": [r["text"] for r in records[4:]]}), tmp_path / "p.parquet")
    source = TextFiles(tmp_path, val_fraction=0.3)
    skipped: dict[str, int] = {}
    texts = [t for f in source.files() for _, t in source.documents(f, skipped)]
    assert sorted(texts) == sorted(r["text"] for r in records)
    assert skipped == {"no_text": 1, "bad_json_lines": 1}


def test_bad_utf8_file_is_skipped_and_counted(tmp_path):
    write_files(tmp_path, 40)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    prepared = prepare(TextFiles(tmp_path, val_fraction=0.3), CharTokenizer(), tmp_path / "c")
    assert prepared.stats()["skipped/not_utf8"] == 1
    assert prepared.stats()["train/documents"] + prepared.stats()["validation/documents"] == 40


def test_nothing_readable_is_one_config_error(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match=r"no readable train documents \(skipped: not_utf8=1\)"):
        prepare(TextFiles(tmp_path), BPETokenizer(300), tmp_path / "c")
    with pytest.raises(ConfigError, match=r"no readable train documents \(skipped: not_utf8=1\)"):
        prepare(TextFiles(tmp_path), CharTokenizer(), tmp_path / "c")  # fitted on nothing
    with pytest.raises(ConfigError, match=r"data\.root=.*no \.txt/.* files in nope/\*\.txt"):
        TextFiles(tmp_path, train="nope/*.txt", validation="a.txt").files()  # no match at all


# ---- shards --------------------------------------------------------------------------------


def test_shards_equal_direct_tokenization(tmp_path):
    write_files(tmp_path / "train", 30)
    write_files(tmp_path / "validation", 5, 100)
    source = TextFiles(tmp_path)
    docs = documents_by_split(source)
    tok = BPETokenizer(vocab_size=300)
    prepared = prepare(source, tok, tmp_path / "cache", shard_tokens=200)  # several shards
    assert len(prepared.manifest["splits"]["train"]["shards"]) > 2
    for split in ("train", "validation"):
        shards = prepared.shards(split)
        assert all(a.dtype == np.uint16 for a in shards.arrays)
        joined = np.concatenate(shards.arrays).astype(np.int64)
        direct = token_stream(docs[split], prepared.tokenizer)
        assert joined.tolist() == direct.ids.tolist()
        assert prepared.chars_per_token(split) == pytest.approx(direct.chars_per_token)
    on_disk = sum(p.stat().st_size for p in prepared.folder.glob("*.bin"))
    assert on_disk == 2 * sum(s["tokens"] for s in prepared.manifest["splits"].values())


def test_uint32_past_65536_ids(tmp_path):
    (tmp_path / "train.txt").write_text("1 65535 65536 69999 7")
    (tmp_path / "validation.txt").write_text("65537 3")
    prepared = prepare(TextFiles(tmp_path), IdTokenizer(70000), tmp_path / "cache")
    assert prepared.manifest["dtype"] == "uint32"
    assert prepared.shards("train").arrays[0].tolist() == [1, 65535, 65536, 69999, 7]
    (tmp_path / "train.txt").write_text("65535 1 2")
    (tmp_path / "validation.txt").write_text("3 4")
    small = prepare(TextFiles(tmp_path), IdTokenizer(2**16), tmp_path / "cache")  # ids < 65,536
    assert small.manifest["dtype"] == "uint16"
    assert small.shards("train").arrays[0].tolist() == [65535, 1, 2]


def test_a_second_preparation_reads_the_cache(tmp_path, monkeypatch):
    write_files(tmp_path, 30)
    first = prepare(TextFiles(tmp_path), BPETokenizer(vocab_size=300), tmp_path / "c")
    monkeypatch.setattr("lm_lab.data.preparation.prepare.build", lambda *a: pytest.fail("rebuilt"))
    again = prepare(TextFiles(tmp_path), BPETokenizer(vocab_size=300), tmp_path / "c")
    assert again.folder == first.folder and again.tokenizer.to_json() == first.tokenizer.to_json()
    fitted = prepare(TextFiles(tmp_path), first.tokenizer, tmp_path / "c")  # e.g. eval.py
    assert fitted.folder.resolve() == first.folder


def count_builds(monkeypatch) -> list[Path]:
    """The folders `build` prepares from now on (it still builds them)."""
    built: list[Path] = []
    real = prepare_module.build

    def counted(corpus, files, tokenizer, final, *rest):
        built.append(final)
        return real(corpus, files, tokenizer, final, *rest)

    monkeypatch.setattr(prepare_module, "build", counted)
    return built


def prepared_with(root: Path, cache: Path, **changes):
    """The corpus of the cache tests: one setting changed at a time."""
    args = {"val_fraction": 0.2, "vocab_size": 300, "shard_tokens": 200, "num_proc": None}
    args |= changes
    return prepare(
        TextFiles(root, val_fraction=args["val_fraction"]),
        BPETokenizer(vocab_size=args["vocab_size"]),
        cache,
        num_proc=args["num_proc"],
        shard_tokens=args["shard_tokens"],
    )


def edit_keeping_size_and_mtime(path: Path) -> None:
    """What `cp -p` or `rsync -a` of an edited copy does: same size, same mtime."""
    before = path.stat()
    path.write_text(path.read_text().upper())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns


# a change to the corpus folder, or to a setting, one at a time
FILE_CHANGES = {
    "content, same size and mtime": lambda root: edit_keeping_size_and_mtime(root / "doc003.txt"),
    "a file added": lambda root: write_files(root, 1, 50),
    "a file renamed": lambda root: (root / "doc003.txt").rename(root / "doc903.txt"),
    "mtime only (touch)": lambda root: os.utime(root / "doc003.txt", ns=(10**18, 10**18)),
    "a file of another suffix": lambda root: (root / "notes.bin").write_bytes(b"\0"),
}
SETTING_CHANGES = {
    "tokenizer settings": {"vocab_size": 320},
    "source settings": {"val_fraction": 0.3},
    "shard_tokens": {"shard_tokens": 300},
    "tokenizing processes": {"num_proc": 1},
}
UNRELATED = ("mtime only (touch)", "a file of another suffix", "tokenizing processes")


@pytest.mark.parametrize("change", [*FILE_CHANGES, *SETTING_CHANGES])
def test_the_cache_is_rebuilt_for_each_cause_alone_and_only_for_them(tmp_path, monkeypatch, change):
    root, cache = tmp_path / "corpus", tmp_path / "cache"
    write_files(root, 30)
    built = count_builds(monkeypatch)
    first = prepared_with(root, cache)
    if change in FILE_CHANGES:
        FILE_CHANGES[change](root)
    again = prepared_with(root, cache, **SETTING_CHANGES.get(change, {}))
    rebuilt = change not in UNRELATED
    assert len(built) == 1 + rebuilt and (again.folder != first.folder) == rebuilt
    if change == "content, same size and mtime":  # and the new shards hold the new text
        ids = [a.tolist() for split in again.splits for a in again.shards(split).arrays]
        texts = [again.tokenizer.decode(part) for part in ids]
        assert any(text_of(3).upper() in text for text in texts)


def test_the_loser_of_the_publish_race_uses_the_winners_tokenizer(tmp_path, monkeypatch):
    """Two processes fit and prepare at once; the other one publishes first, with a tokenizer
    fitted otherwise (another library version, another sample): its shards are the ones every
    run reads, so its tokenizer must be the one this process returns."""
    write_files(tmp_path / "corpus", 30)
    real_publish = prepare_module.publish
    winner = BPETokenizer(vocab_size=300).fit(["zeta eta theta " * 40, "\n\n"])

    def publish_after_the_winner(tmp: Path, final: Path, manifest: dict) -> None:
        theirs = tmp.with_name(f"{final.name}.tmp-otherhost-1")
        shutil.copytree(tmp, theirs)
        winner.save(theirs / TOKENIZER)
        real_publish(theirs, final, manifest)  # the other process wins
        real_publish(tmp, final, manifest)  # this one finds the folder there and drops its own

    monkeypatch.setattr(prepare_module, "publish", publish_after_the_winner)
    ours = BPETokenizer(vocab_size=300)
    prepared = prepare(TextFiles(tmp_path / "corpus"), ours, tmp_path / "cache")
    published = load_tokenizer(prepared.folder / TOKENIZER).to_json()
    assert prepared.tokenizer.to_json() == published == winner.to_json() != ours.to_json()
    assert not list((tmp_path / "cache" / "corpora").glob("*.tmp-*"))  # ours was dropped


KILLED_MID_WAY = """
import os, signal, sys
from lm_lab.data.preparation import shards
from lm_lab.data.sources.documents import TextFiles
from lm_lab.data.preparation.prepare import prepare
from lm_lab.data.tokenization.tokenizers import CharTokenizer

add = shards.ShardWriter.add
def add_then_die(self, *args):
    n = add(self, *args)
    if self.split == "train" and self.documents > 10:
        os.kill(os.getpid(), signal.SIGKILL)
    return n
shards.ShardWriter.add = add_then_die
prepare(TextFiles(sys.argv[1]), CharTokenizer(), sys.argv[2], shard_tokens=100)
"""


def test_a_killed_preparation_leaves_no_cache_a_rerun_uses(tmp_path, monkeypatch):
    write_files(tmp_path / "corpus", 40)
    cache = tmp_path / "cache"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_MID_WAY), str(tmp_path / "corpus"), cache],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (left,) = (cache / "corpora").iterdir()  # the private folder, half written, no manifest
    assert (
        ".tmp-" in left.name and list(left.glob("train-*.bin")) and not list(left.rglob(MANIFEST))
    )
    monkeypatch.chdir(tmp_path)
    source = TextFiles(tmp_path / "corpus")
    prepared = prepare(source, CharTokenizer(), cache, shard_tokens=100)
    folders = [p.name for p in (cache / "corpora").iterdir() if not p.is_symlink()]
    assert folders == [prepared.folder.name]  # the half-written one is gone
    docs = documents_by_split(source)
    joined = np.concatenate(prepared.shards("train").arrays).tolist()
    assert joined == token_stream(docs["train"], prepared.tokenizer).ids.tolist()


# ---- tokenizer sample, datamodule, DDP -------------------------------------------------------


def test_tokenizer_sample_is_capped_and_spread_over_the_corpus(tmp_path):
    write_files(tmp_path, 100)
    source = TextFiles(tmp_path, val_fraction=0.01)
    files = source.files()
    total = sum(f.size for f in files)
    sample = list(training_sample(source, files, max_chars=total // 10))
    assert sum(map(len, sample)) <= total // 10
    numbers = [int(text.rsplit("#", 1)[1]) for text in sample if "#" in text]
    assert numbers[0] < 15 and numbers[-1] > 80  # from the start to the end of the corpus


def lm_datamodule(root: Path, cache: Path, **kwargs) -> TextDataModule:
    return TextDataModule(
        TextFiles(root, val_fraction=0.2),
        CharTokenizer(),
        "generate",
        batch_size=4,
        block_size=16,
        train_windows_per_epoch=64,
        cache_dir=str(cache),
        **kwargs,
    )


def test_ddp_ranks_draw_disjoint_shares_of_the_same_shards(tmp_path):
    write_files(tmp_path / "corpus", 60)
    ranks = []
    for rank in (0, 1):
        dm = lm_datamodule(tmp_path / "corpus", tmp_path / "cache")
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        dm.setup()
        ranks.append(dm)
    assert ranks[0]._prepared.folder == ranks[1]._prepared.folder  # one preparation, read twice
    batches = [[b["input_ids"] for b in dm.train_dataloader()] for dm in ranks]
    dataset = ranks[0]._datasets["train"]
    sampler = RandomWindows(len(dataset) + 16, 16, 8, 64, seed=0)  # one process, global batch
    for step, starts in enumerate(sampler):
        whole = dataset[starts]["input_ids"]  # (8, 16)
        assert torch.equal(torch.cat([batches[0][step], batches[1][step]]), whole)
    assert len(batches[0]) == len(batches[1]) == 8
    evaluated = [list(dm.val_dataloader()) for dm in ranks]
    assert len(evaluated[0]) + len(evaluated[1]) == len(ranks[0]._datasets["validation"])


def test_datamodule_reports_documents_held_out_and_setup_time(tmp_path):
    write_files(tmp_path / "corpus", 60)
    dm = lm_datamodule(tmp_path / "corpus", tmp_path / "cache")
    dm.setup()
    assert dm.stats["validation/held_out_documents"] == dm.stats["validation/documents"] > 0
    assert dm.stats["train/documents"] + dm.stats["validation/documents"] == 60
    assert dm.test_split == "validation" and "setup_ms" in dm.stats
    assert dm.chars_per_token == {"train": 1.0, "validation": 1.0, "test": 1.0}  # char: 1 each


def test_worker_processes_encode_like_the_tokenizer_in_order():
    """Char/byte tokenizers are spread over `num_proc` processes, chunk order kept."""
    pieces = [("train" if i % 3 else "validation", text_of(i), i % 2 == 0) for i in range(40)]
    tok = CharTokenizer().fit(t for _, t, _ in pieces)
    got = list(encoded_chunks(chunks(iter(pieces), 300), tok, 2, np.dtype(np.uint16)))
    assert len(got) > 2  # several chunks, so a pool was used
    assert [m for meta, _ in got for m in meta] == [(s, len(t), f) for s, t, f in pieces]
    direct = tok.encode_batch([t for _, t, _ in pieces])
    assert [list(ids) for _, enc in got for ids in enc] == direct


def test_dangling_and_self_referencing_symlinks_are_skipped_and_counted(tmp_path, caplog):
    write_files(tmp_path / "corpus", 40)
    (tmp_path / "corpus" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "corpus" / "loop.txt").symlink_to(tmp_path / "corpus" / "loop.txt")
    (tmp_path / "corpus" / "ok.txt").symlink_to(tmp_path / "corpus" / "doc001.txt")  # read once
    for source in (TextFiles(tmp_path / "corpus"), TextFiles(tmp_path, train="corpus/*.txt")):
        stats = prepare(source, CharTokenizer(), None).stats()
        assert stats["skipped/broken_link"] == 2 and stats["files"] == 40
        assert stats["train/documents"] + stats.get("validation/documents", 0) == 40
    assert "gone.txt" in caplog.text and "(broken_link)" in caplog.text


def test_a_full_disk_is_one_config_error_and_leaves_nothing(tmp_path, monkeypatch):
    write_files(tmp_path / "corpus", 40)

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as numpy's tofile raises it

    monkeypatch.setattr(shards.ShardWriter, "_write", no_space)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as err:
        prepare(TextFiles(tmp_path / "corpus"), CharTokenizer(), cache)
    assert str(err.value) == (
        f"LM_LAB_CACHE (paths.cache_dir={cache}): no room left (No space left on device); "
        "point LM_LAB_CACHE at a writable folder with room for the corpus (or set "
        "data.cache_dir=null for a temporary one)"
    )
    assert list((cache / "corpora").iterdir()) == []  # the half-written folder is gone
    with pytest.raises(ConfigError, match=r"^data\.cache_dir=null: the temporary folder .*: no "):
        prepare(TextFiles(tmp_path / "corpus"), CharTokenizer(), None)  # not LM_LAB_CACHE's
