"""Preparing a corpus for language modelling: documents streamed from the files, tokenized in
chunks and written as token shards (see `shards.py`), so memory stays flat whatever the corpus
size, and whatever the file layout: documents arrive as pieces of at most
`documents.PIECE_CHARS` characters, so one huge `train.txt` costs what many small files do. The
prepared corpus is cached under `<cache_dir>/corpora/<key>`, the key a hash of the files (names,
splits, sizes and contents), the source's settings, `shard_tokens` and the tokenizer (its
settings when unfitted: the fitted one is stored with the shards, and every process uses the
published one), so a later run only memory-maps it.

BPE (or char) training reads an iterator of training documents capped by the tokenizer's
`train_max_chars`, from files picked evenly across the corpus, never the whole corpus at once.

Once for a cluster (e.g. on a login node), with the overrides of the training run:
    python -m lm_lab.cli.prepare data=text data.root=DIR tokenizer=bpe
then every rank only reads. Without that, local rank 0 of each node prepares and the other
ranks wait for the manifest.
"""

import contextlib
import ctypes
import errno
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from tqdm import tqdm

from lm_lab.data.preparation.shards import (
    SEPARATOR,
    TOKENIZER,
    ShardWriter,
    TokenShards,
    building_folder,
    dtype_for,
    link,
    publish,
    read_manifest,
)
from lm_lab.data.sources.documents import SPLITS, CorpusFile, Piece, Unreadable, as_pieces, cut
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.tokenizers import Tokenizer, from_json
from lm_lab.data.tokenization.tokenizers import load as load_tokenizer
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

CHUNK_CHARS = 2_000_000  # characters of document pieces tokenized per batch: bounds the memory
SHARD_TOKENS = 2**28  # a shard closes at the first document boundary past this many tokens
WAIT_S = 6 * 3600  # how long a rank waits for another one's preparation
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # a full disk, an exhausted quota
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class PreparedCorpus:
    """A complete corpus folder: its manifest, its tokenizer and memory-mapped shards."""

    folder: Path
    manifest: dict[str, Any]
    tokenizer: Tokenizer
    keep_alive: Any = field(default=None, repr=False)  # a temporary folder, when uncached

    def shards(self, split: str) -> TokenShards:
        return TokenShards.open(self.folder, self.manifest["splits"][split], self.manifest["dtype"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def chars_per_token(self, split: str) -> float:
        info = self.manifest["splits"][split]
        return info["chars"] / max(1, info["tokens"])

    def stats(self) -> dict[str, int]:
        """Flat counts for the data report."""
        m = self.manifest
        stats = {f"{split}/{key}": s[key] for split, s in m["splits"].items() for key in COUNTS}
        if m["held_out"] and "validation" in m["splits"]:
            stats["validation/held_out_documents"] = m["splits"]["validation"]["documents"]
        stats |= {f"skipped/{reason}": n for reason, n in m["skipped"].items()}
        return stats | {"files": m["files"], "ignored_files": m["ignored_files"]}


COUNTS = ("documents", "tokens", "chars", "unknown_chars")


class MemoryCorpus:
    """A source that loads its splits in memory (pydoc, csv, jsonl, hf) seen as a corpus: one
    pseudo-file per split, keyed by a hash of its texts."""

    name = "memory"

    def __init__(self, splits: dict[str, Split]) -> None:
        self.splits = splits

    def files(self) -> list[CorpusFile]:
        return [
            CorpusFile(Path(split.origin or name), name, name, sum(map(len, split.texts)))
            for name, split in self.splits.items()
        ]

    def file_digest(self, file: CorpusFile) -> str:
        return ""  # the fingerprint hashes every text already

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for name, split in self.splits.items():
            digest.update(name.encode() + b"\1")
            for text in split.texts:
                digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        return {"source": self.name, "texts": digest.hexdigest()}

    def pieces(self, file: CorpusFile, skipped: dict[str, int]) -> Iterator[Piece]:
        for text in self.splits[file.split].texts:
            yield from as_pieces(file.split, cut(text))


def corpus_key(
    corpus: Any, files: list[CorpusFile], tokenizer: Tokenizer, shard_tokens: int
) -> str:
    """Changes with anything that changes the shards (a file's content too, whatever its size
    and mtime say); equal on every rank and machine. Hashing the files costs one read of the
    corpus per run (see docs/corpora.md for the figure)."""
    if tokenizer.is_fitted:
        identity = tokenizer.to_json()
    else:  # its settings; the fitted tokenizer is stored with the shards
        settings = {k: v for k, v in vars(tokenizer).items() if not k.startswith("_")}
        identity = json.dumps([type(tokenizer).__name__, settings], sort_keys=True, default=str)
    state = {
        "corpus": corpus.fingerprint(),
        "files": [(f.name, f.split, f.size, corpus.file_digest(f)) for f in files],
        "tokenizer": identity,
        "shard_tokens": shard_tokens,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]


def prepare(
    corpus: Any,
    tokenizer: Tokenizer,
    cache_dir: str | Path | None,
    num_proc: int | None = None,
    local_rank: int | None = None,
    shard_tokens: int = SHARD_TOKENS,
) -> PreparedCorpus:
    """The prepared corpus, from the cache when it is there. Local rank 0 (or anyone, without
    DDP) prepares what is missing; other ranks wait for its manifest. cache_dir None prepares
    into a temporary folder that lives as long as the returned object. An unfitted tokenizer
    is fitted by whoever prepares, and the returned one is always the tokenizer published with
    the shards: when two processes race, the loser's own fit (kept out of the cache) is not
    the one its shards were written with."""
    files = corpus.files()
    keep_alive = None
    if cache_dir is None:
        keep_alive = tempfile.TemporaryDirectory(prefix="lm_lab_corpus_")
        cache_dir = keep_alive.name
    cache = Path(cache_dir).expanduser()
    if cache.exists() and not cache.is_dir():
        raise ConfigError(cache_problem(cache, "a file, not a folder"))
    was_fitted = tokenizer.is_fitted
    final = cache / "corpora" / corpus_key(corpus, files, tokenizer, shard_tokens)
    manifest = read_manifest(final)
    if manifest is None:
        rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
        if rank == 0 or keep_alive is not None:
            with writing_cache(cache, temporary=keep_alive is not None), interruptible():
                build(corpus, files, tokenizer, final, num_proc, shard_tokens)
        else:
            wait_for(final)
        manifest = read_manifest(final)
    else:
        log.info(f"prepared corpus found: {final}")
    if was_fitted:
        return PreparedCorpus(final, manifest, tokenizer, keep_alive)
    fitted = load_tokenizer(final / TOKENIZER)
    # a later run given this fitted tokenizer (eval.py) finds the corpus too
    link(final, final.parent / corpus_key(corpus, files, fitted, shard_tokens))
    return PreparedCorpus(final, manifest, fitted, keep_alive)


def cache_problem(cache: Path, what: str, temporary: bool = False) -> str:
    if temporary:  # data.cache_dir=null: a folder of tempfile's
        return (
            f"data.cache_dir=null: the temporary folder {cache}: {what}; set TMPDIR to a "
            "writable folder with room for the corpus, or data.cache_dir to one"
        )
    return (
        f"LM_LAB_CACHE (paths.cache_dir={cache}): {what}; point LM_LAB_CACHE at a writable "
        "folder with room for the corpus (or set data.cache_dir=null for a temporary one)"
    )


@contextlib.contextmanager
def writing_cache(cache: Path, temporary: bool) -> Iterator[None]:
    """Turns a failed write into the cache (read-only, full, not a folder) into one line; any
    other OSError (a bug, or the corpus itself) is raised as it is."""
    try:
        yield
    except OSError as err:
        if err.errno in FULL_DISK:  # numpy's tofile names no file
            where = f" writing {err.filename}" if err.filename else ""
            what = f"no room left{where} ({err.strerror})"
        elif err.filename and Path(err.filename).is_relative_to(cache):
            what = f"cannot write {err.filename} ({err.strerror})"
        else:
            raise
        raise ConfigError(cache_problem(cache, what, temporary)) from err


class Interrupted(SystemExit):
    """SIGINT or SIGTERM stopped the preparation: a SystemExit with status 128 + the signal's
    number (130, 143), so every entry point (prepare, train.py, eval.py) ends without a
    traceback, and every cleanup on the way (the private folder's removal) runs first."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise `Interrupted` (SIGTERM would end the
    process at once, leaving a half-written folder and no word; Lightning's handler would only
    note it for the first training batch), and the way out is one line on stderr. Nested
    blocks and other threads leave it to the outermost block of the main thread."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is _stop
    ):
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    try:
        yield
    except Interrupted as stop:
        print(
            f"interrupted by {signal.Signals(stop.signum).name} while preparing the corpus: "
            "nothing half-prepared is kept or published; run the same command again to "
            "prepare it",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def wait_for(final: Path) -> None:
    started = time.monotonic()
    while read_manifest(final) is None:
        if time.monotonic() - started > WAIT_S:
            raise ConfigError(
                f"waited {WAIT_S}s for {final / 'manifest.json'}; prepare the corpus first: "
                "python -m lm_lab.cli.prepare <the run's overrides>"
            )
        time.sleep(1.0)


# ---- building ------------------------------------------------------------------------------


def build(
    corpus: Any,
    files: list[CorpusFile],
    tokenizer: Tokenizer,
    final: Path,
    num_proc: int | None,
    shard_tokens: int,
) -> None:
    """Fits the tokenizer if needed, writes every split's shards in one pass over the files,
    then publishes the folder. Anything but success leaves no visible corpus behind."""
    tmp = building_folder(final)
    try:
        fit_s = fit_tokenizer(corpus, files, tokenizer)
        tokenizer.save(tmp / TOKENIZER)
        started = time.perf_counter()
        summary = write_shards(corpus, files, tokenizer, tmp, num_proc, shard_tokens)
        seconds = time.perf_counter() - started
        check_splits(corpus, summary)
        held_out = any(f.split is None for f in files)
        timing = {"fit_tokenizer_s": round(fit_s, 2), "tokenize_s": round(seconds, 2)}
        publish(tmp, final, summary | timing | {"held_out": held_out})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tokens = sum(s["tokens"] for s in summary["splits"].values())
    mb = summary["bytes"] / 1e6
    log.info(
        f"prepared {summary['files']} files ({mb:.1f} MB, {tokens} tokens) in {seconds:.1f}s: "
        f"{mb / seconds:.2f} MB/s, {tokens / seconds:.0f} tokens/s -> {final}"
    )


def fit_tokenizer(corpus: Any, files: list[CorpusFile], tokenizer: Tokenizer) -> float:
    """Seconds spent fitting (0 when the tokenizer arrives fitted)."""
    if tokenizer.is_fitted:
        return 0.0
    started = time.perf_counter()
    sample = training_sample(corpus, files, tokenizer.train_max_chars)
    tokenizer.fit(itertools.chain(sample, [SEPARATOR]))  # documents are joined by it
    seconds = time.perf_counter() - started
    log.info(f"tokenizer {tokenizer} fitted in {seconds:.1f}s")
    return seconds


def training_sample(corpus: Any, files: list[CorpusFile], max_chars: int | None) -> Iterator[str]:
    """Training text for fitting a tokenizer, at most max_chars of it, as document pieces: from
    files picked evenly across the corpus (by count, sized so their bytes about match the cap),
    in order, the last piece cut at the cap. None reads every training document."""
    candidates = [f for f in files if f.split in ("train", None)]
    total = sum(f.size for f in candidates)
    if max_chars is not None and total > max_chars:
        n = max(1, math.ceil(len(candidates) * max_chars / total))
        candidates = [candidates[int((j + 0.5) * len(candidates) / n)] for j in range(n)]
    budget = math.inf if max_chars is None else max_chars
    for file in candidates:
        try:
            for split, text, _ in corpus.pieces(file, {}):
                if split == "train":
                    yield text[: int(min(budget, len(text)))]
                    budget -= len(text)
                    if budget <= 0:
                        return
        except Unreadable:
            continue  # counted by the tokenizing pass


def write_shards(
    corpus: Any,
    files: list[CorpusFile],
    tokenizer: Tokenizer,
    folder: Path,
    num_proc: int | None,
    shard_tokens: int,
) -> dict[str, Any]:
    """One pass: document pieces read, tokenized a chunk at a time, appended to their split's
    shards."""
    dtype = dtype_for(tokenizer.vocab_size)
    separator = tokenizer.encode(SEPARATOR)
    writers = {s: ShardWriter(folder, s, dtype, separator, shard_tokens) for s in SPLITS}
    skipped: Counter[str] = Counter(getattr(corpus, "skipped_files", {}))  # e.g. broken links
    total = sum(f.size for f in files)
    tokens = 0
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="preparing", mininterval=1.0, disable=None
    ) as bar:
        pieces = read_pieces(corpus, files, skipped, bar)
        for meta, encoded in encoded_chunks(chunks(pieces), tokenizer, num_proc, dtype):
            for split in set(s for s, _, _ in meta):
                mine = [i for i, (s, _, _) in enumerate(meta) if s == split]
                chars = sum(meta[i][1] for i in mine)
                tokens += writers[split].add([(encoded[i], meta[i][2]) for i in mine], chars)
            bar.set_postfix_str(f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f} tokens/s")
    splits = {
        s: w.summary() | unknown(folder, w, tokenizer) for s, w in writers.items() if w.documents
    }
    return {
        "dtype": dtype.name,
        "splits": splits,
        "skipped": dict(skipped),
        "files": len(files),
        "ignored_files": getattr(corpus, "ignored_files", 0),
        "bytes": total,
    }


def unknown(folder: Path, writer: ShardWriter, tokenizer: Tokenizer) -> dict[str, int]:
    """{"unknown_chars": ids standing for characters the tokenizer never saw}: one read of the
    written shards, page by page (0 for tokenizers without an UNK id)."""
    if tokenizer.unk_id is None:
        return {"unknown_chars": 0}
    arrays = [np.memmap(folder / s["file"], dtype=writer.dtype, mode="r") for s in writer.shards]
    return {"unknown_chars": sum(int(np.count_nonzero(a == tokenizer.unk_id)) for a in arrays)}


def read_pieces(
    corpus: Any, files: list[CorpusFile], skipped: Counter[str], bar: tqdm
) -> Iterator[Piece]:
    """Every piece of every file; a file that cannot be read is skipped and counted. The bar
    moves a piece at a time (by characters, then the file's remaining bytes), so one big file
    shows its progress too."""
    for file in files:
        shown = 0
        try:
            for piece in corpus.pieces(file, skipped):
                yield piece
                step = min(len(piece[1]), file.size - shown)
                bar.update(step)
                shown += step
        except Unreadable as err:
            skipped[err.reason] += 1
            if skipped[err.reason] <= 3:
                log.warning(f"skipped {err} ({err.reason})")
        bar.update(file.size - shown)


def chunks(pieces: Iterator[Piece], chunk_chars: int = CHUNK_CHARS) -> Iterator[list[Piece]]:
    chunk: list[Piece] = []
    size = 0
    for piece in pieces:
        chunk.append(piece)
        size += len(piece[1])
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def encoded_chunks(
    chunks: Iterator[list[Piece]], tokenizer: Tokenizer, num_proc: int | None, dtype: np.dtype
) -> Iterator[tuple[list[tuple[str, int, bool]], list[Any]]]:
    """((split, chars, starts a document) per piece, ids per piece) per chunk, in order. BPE
    encodes a batch on all cores by itself; other tokenizers get `num_proc` worker processes
    (None = all cores), with a bounded number of chunks in flight so memory stays flat."""
    native = type(tokenizer).encode_batch is not Tokenizer.encode_batch
    workers = num_proc or os.cpu_count() or 1
    head = list(itertools.islice(chunks, 2))  # a single chunk is not worth starting a pool
    chunks = itertools.chain(head, chunks)
    if native or workers <= 1 or len(head) < 2:
        for chunk in chunks:
            yield meta_of(chunk), tokenizer.encode_batch([t for _, t, _ in chunk])
        return
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(tokenizer.to_json(),))
    try:
        pending: deque = deque()
        for chunk in chunks:
            texts = [t for _, t, _ in chunk]
            pending.append((meta_of(chunk), pool.submit(_encode, texts, dtype)))
            if len(pending) > 2 * workers:
                meta, future = pending.popleft()
                yield meta, future.result()
        for meta, future in pending:
            yield meta, future.result()
    finally:  # an interrupted preparation does not wait for the chunks still queued
        pool.shutdown(cancel_futures=True)


def meta_of(chunk: list[Piece]) -> list[tuple[str, int, bool]]:
    return [(split, len(text), first) for split, text, first in chunk]


_worker_tokenizer: Tokenizer | None = None
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _init_worker(tokenizer_json: str) -> None:
    """Also asks Linux to end the worker with its parent, so a killed preparation leaves none.
    Ctrl-C (sent to the whole process group) is the parent's to handle, not the workers', and
    SIGTERM ends a worker at once, whatever handler the parent had when it forked it."""
    global _worker_tokenizer
    _worker_tokenizer = from_json(tokenizer_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _encode(texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
    return [np.asarray(ids, dtype=dtype) for ids in _worker_tokenizer.encode_batch(texts)]


def check_splits(corpus: Any, summary: dict[str, Any]) -> None:
    """Fatal only when nothing usable is left."""
    where = getattr(corpus, "root", corpus.name)
    skipped = ", ".join(f"{k}={n}" for k, n in summary["skipped"].items()) or "none"
    hint = {"train": "", "validation": ", or raise data.source.val_fraction"}
    for split, more in hint.items():
        if split not in summary["splits"]:
            raise ConfigError(
                f"data.root={where}: no readable {split} documents (skipped: {skipped}); "
                f"check the files{more}"
            )
