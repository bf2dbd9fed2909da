"""Corpus preparation speed and memory: lm_lab's streaming shards vs one in-memory encode_batch.

Builds corpora of 16 MB and 160 MB by repeating this Python's standard library (deterministic:
the same on every machine with this Python), in a temp dir it deletes, in two layouts: `files`,
a folder of files (the copies under new names, validation held out by hash), and `single`, the
classic `train.txt` + `validation.txt` (all of it in one train.txt, the first 1 % again as
validation.txt). For each size and layout, in fresh subprocesses:
- lm_lab: `prepare` (BPE fitted on at most tokenizer.train_max_chars, timed apart), then reading,
  tokenizing and writing shards: MB/s, tokens/s, peak RSS, bytes per token on disk;
- reference (`files` only, unless --no-reference): every document read into memory first (not
  timed), then one `tokenizers.Tokenizer.encode_batch` call (default threads) with the same
  fitted tokenizer; for `single` that is one 160 MB text, tens of GB, so it is not run;
- data setup of a new run on the prepared corpus (memory-mapped), in seconds, and within it the
  listing of the files and the hashing of their contents that key the cache.

    python bench/data_speed.py [--sizes 16 160] [--layouts files single] [--vocab 4096]
"""

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MB = 1_000_000
LAYOUTS = ("files", "single")  # a folder of files; one train.txt (+ validation.txt)


def stdlib_files() -> list[Path]:
    """Every UTF-8 .py file of the standard library (site-packages excluded), sorted."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(stdlib.rglob("*.py")):
        parts = path.relative_to(stdlib).parts
        if {"site-packages", "dist-packages"} & set(parts):
            continue
        try:
            path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found.append(path)
    return found


def stdlib_copies(target_bytes: int) -> Iterator[tuple[str, bytes]]:
    """(copy<k>/<path with _>, bytes) of the stdlib files, over and over, until target_bytes.
    Copies repeat the same text: a fair load for a tokenizer, whose cost does not depend on
    having seen a document before."""
    sources = stdlib_files()
    written = 0
    for k in itertools.count():
        for path in sources:
            data = path.read_bytes()
            yield f"copy{k:03d}/{'_'.join(path.parts[-3:])}", data
            written += len(data)
            if written >= target_bytes:
                return


def build_corpus(folder: Path, target_bytes: int, layout: str) -> None:
    """`files`: each copy a file of its own; `single`: all of them in one train.txt (documents
    joined by a blank line), its first 1 % again as validation.txt."""
    if layout == "files":
        for name, data in stdlib_copies(target_bytes):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return
    folder.mkdir(parents=True)
    with (folder / "train.txt").open("wb") as train:
        for _, data in stdlib_copies(target_bytes):
            train.write(data + b"\n\n")
    with (folder / "train.txt").open("rb") as train:
        (folder / "validation.txt").write_bytes(train.read(target_bytes // 100))


def child_prepare(corpus: str, cache: str, vocab: int) -> dict:
    from lm_lab.data.preparation.prepare import prepare
    from lm_lab.data.sources.documents import TextFiles
    from lm_lab.data.tokenization.tokenizers import BPETokenizer

    started = time.perf_counter()
    prepared = prepare(TextFiles(corpus), BPETokenizer(vocab, train_max_chars=10**7), cache)
    wall = time.perf_counter() - started
    m = prepared.manifest
    tokens = sum(s["tokens"] for s in m["splits"].values())
    on_disk = sum(p.stat().st_size for p in prepared.folder.glob("*.bin"))
    return {
        "folder": str(prepared.folder),
        "fit_s": m["fit_tokenizer_s"],
        "tokenize_s": m["tokenize_s"],
        "wall_s": wall,
        "bytes": m["bytes"],
        "tokens": tokens,
        "bytes_per_token": on_disk / tokens,
    }


def child_reference(corpus: str, tokenizer_json: str) -> dict:
    from tokenizers import Tokenizer

    from lm_lab.data.tokenization.tokenizers import load

    tok: Tokenizer = load(tokenizer_json)._tok
    paths = sorted(p for p in Path(corpus).rglob("*") if p.is_file())
    texts = [p.read_text(encoding="utf-8") for p in paths]
    started = time.perf_counter()
    encoded = tok.encode_batch(texts, add_special_tokens=False)
    seconds = time.perf_counter() - started
    return {
        "tokenize_s": seconds,
        "bytes": sum(p.stat().st_size for p in paths),
        "tokens": sum(len(e.ids) for e in encoded),
    }


def child_setup(corpus: str, cache: str, vocab: int) -> dict:
    """The data setup of a new run (`TextDataModule.setup`) on an already prepared corpus."""
    from lm_lab.data.loaders.datamodule import TextDataModule
    from lm_lab.data.sources.documents import TextFiles, content_digest
    from lm_lab.data.tokenization.tokenizers import BPETokenizer

    source = TextFiles(corpus)
    tokenizer = BPETokenizer(vocab, train_max_chars=10**7)
    datamodule = TextDataModule(source, tokenizer, "generate", cache_dir=cache)
    started = time.perf_counter()
    datamodule.setup("fit")
    next(iter(datamodule.train_dataloader()))  # the first batch too
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    for file in source.files():  # what the cache key reads, timed again alone (page cache warm)
        content_digest(file.path)
    return {"setup_s": setup_s, "hash_s": time.perf_counter() - started}


def run_child(*args: str) -> dict:
    """Runs this file as `--child ...` and returns its JSON, with its peak RSS in MB."""
    cmd = [sys.executable, __file__, "--child", *args]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 160], help="corpus MB")
    parser.add_argument(
        "--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS), help="file layouts"
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the in-memory encode_batch reference"
    )
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"prepare": child_prepare, "reference": child_reference, "setup": child_setup}[kind]
        result = fn(*rest) if kind == "reference" else fn(*rest[:2], int(rest[2]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="lm_lab_bench_data_") as tmp:
        for layout, size in itertools.product(args.layouts, args.sizes):
            corpus, cache = Path(tmp) / f"corpus{size}", Path(tmp) / f"cache{size}"
            build_corpus(corpus, size * MB, layout)
            ours = run_child("prepare", str(corpus), str(cache), str(args.vocab))
            ref = None
            if layout == "files" and not args.no_reference:
                tokenizer = str(Path(ours["folder"]) / "tokenizer.json")
                ref = run_child("reference", str(corpus), tokenizer)
            setup = run_child("setup", str(corpus), str(cache), str(args.vocab))
            rows.append((layout, size, ours, ref, setup))
            print(f"done: {layout} {size} MB", file=sys.stderr, flush=True)
            shutil.rmtree(corpus)
            shutil.rmtree(cache)
    print_table(rows, args.vocab)


def print_table(rows: list, vocab: int) -> None:
    print(f"\nBPE vocab {vocab}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")
    header = (
        "| layout | corpus | lm_lab MB/s | lm_lab tokens/s | reference MB/s | ratio | BPE fit s "
        "| peak RSS lm_lab MB | peak RSS reference MB | bytes/token | setup of a new run s "
        "| of which listing + hashing s |"
    )
    print(header)
    print("|" + "---|" * 12)
    for layout, size, ours, ref, setup in rows:
        mbps = ours["bytes"] / MB / ours["tokenize_s"]
        ref_mbps = ref["bytes"] / MB / ref["tokenize_s"] if ref else None
        reference = f"{ref_mbps:.2f} | {mbps / ref_mbps:.2f}" if ref_mbps else "not run | -"
        print(
            f"| {layout} | {size} MB | {mbps:.2f} | {ours['tokens'] / ours['tokenize_s']:,.0f} "
            f"| {reference} | {ours['fit_s']:.1f} | {ours['peak_rss_mb']:.0f} "
            f"| {ref['peak_rss_mb'] if ref else 0:.0f} | {ours['bytes_per_token']:.2f} "
            f"| {setup['setup_s']:.2f} | {setup['hash_s']:.2f} |"
        )
    for layout in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == layout]
        if len(mine) > 1:
            small, large = mine[0][2]["peak_rss_mb"], mine[-1][2]["peak_rss_mb"]
            print(f"{layout}: peak RSS {mine[-1][1]} MB / {mine[0][1]} MB: {large / small:.2f}x")


if __name__ == "__main__":
    main()
