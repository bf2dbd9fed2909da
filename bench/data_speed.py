"""Corpus preparation speed and memory: lm_lab's streaming shards vs one in-memory encode_batch.

Builds corpora of 16 MB and 160 MB as folders of files, by repeating this Python's standard
library under new names (deterministic: the same on every machine with this Python), in a temp
dir it deletes. For each size, in fresh subprocesses:
- lm_lab: `prepare` (BPE fitted on at most tokenizer.train_max_chars, timed apart), then reading,
  tokenizing and writing shards: MB/s, tokens/s, peak RSS, bytes per token on disk;
- reference: every document read into memory first (not timed), then one
  `tokenizers.Tokenizer.encode_batch` call (default threads) with the same fitted tokenizer;
- data setup of a new run on the prepared corpus (memory-mapped), in seconds.

    python bench/data_speed.py [--sizes 16 160] [--vocab 4096]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MB = 1_000_000


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


def build_corpus(folder: Path, target_bytes: int) -> int:
    """Copies of the stdlib files, renamed copy<k>/<path with _>, until target_bytes; returns
    the bytes written. Copies repeat the same text: a fair load for a tokenizer, whose cost
    does not depend on having seen a document before."""
    sources = stdlib_files()
    written = k = 0
    while written < target_bytes:
        out = folder / f"copy{k:03d}"
        out.mkdir(parents=True)
        for path in sources:
            data = path.read_bytes()
            (out / "_".join(path.parts[-3:])).write_bytes(data)
            written += len(data)
            if written >= target_bytes:
                break
        k += 1
    return written


def child_prepare(corpus: str, cache: str, vocab: int) -> dict:
    from lm_lab.data.documents import TextFiles
    from lm_lab.data.prepare import prepare
    from lm_lab.data.tokenizers import BPETokenizer

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

    from lm_lab.data.tokenizers import load

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
    from lm_lab.data.datamodule import TextDataModule
    from lm_lab.data.documents import TextFiles
    from lm_lab.data.tokenizers import BPETokenizer

    tokenizer = BPETokenizer(vocab, train_max_chars=10**7)
    datamodule = TextDataModule(TextFiles(corpus), tokenizer, "generate", cache_dir=cache)
    started = time.perf_counter()
    datamodule.setup("fit")
    next(iter(datamodule.train_dataloader()))  # the first batch too
    return {"setup_s": time.perf_counter() - started}


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
        for size in args.sizes:
            corpus, cache = Path(tmp) / f"corpus{size}", Path(tmp) / f"cache{size}"
            build_corpus(corpus, size * MB)
            ours = run_child("prepare", str(corpus), str(cache), str(args.vocab))
            ref = run_child("reference", str(corpus), str(Path(ours["folder"]) / "tokenizer.json"))
            setup = run_child("setup", str(corpus), str(cache), str(args.vocab))
            rows.append((size, ours, ref, setup))
            shutil.rmtree(corpus)
            shutil.rmtree(cache)
    print_table(rows, args.vocab)


def print_table(rows: list, vocab: int) -> None:
    print(f"\nBPE vocab {vocab}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")
    header = (
        "| corpus | lm_lab MB/s | lm_lab tokens/s | reference MB/s | ratio | BPE fit s "
        "| peak RSS lm_lab MB | peak RSS reference MB | bytes/token | setup of a new run s |"
    )
    print(header)
    print("|" + "---|" * 10)
    for size, ours, ref, setup in rows:
        mbps = ours["bytes"] / MB / ours["tokenize_s"]
        ref_mbps = ref["bytes"] / MB / ref["tokenize_s"]
        print(
            f"| {size} MB | {mbps:.2f} | {ours['tokens'] / ours['tokenize_s']:,.0f} "
            f"| {ref_mbps:.2f} | {mbps / ref_mbps:.2f} | {ours['fit_s']:.1f} "
            f"| {ours['peak_rss_mb']:.0f} | {ref['peak_rss_mb']:.0f} "
            f"| {ours['bytes_per_token']:.2f} | {setup['setup_s']:.2f} |"
        )
    if len(rows) > 1:
        small, large = rows[0][1]["peak_rss_mb"], rows[-1][1]["peak_rss_mb"]
        print(f"peak RSS {rows[-1][0]} MB / {rows[0][0]} MB: {large / small:.2f}x")


if __name__ == "__main__":
    main()
